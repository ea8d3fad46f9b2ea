//! A classic BPF interpreter for exactly the opcodes the speaker's filters use, following the
//! kernel's semantics: loads are big-endian, a load past the end of the packet returns 0 (drop).

use super::super::filter::{
    BPF_ABS, BPF_B, BPF_H, BPF_JA, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W,
    MAX_INSTRUCTIONS, SockFilter,
};

const LD_W_ABS: u16 = BPF_LD | BPF_W | BPF_ABS;
const LD_H_ABS: u16 = BPF_LD | BPF_H | BPF_ABS;
const LD_B_ABS: u16 = BPF_LD | BPF_B | BPF_ABS;
const JEQ_K: u16 = BPF_JMP | BPF_JEQ | BPF_K;
const JGE_K: u16 = BPF_JMP | BPF_JGE | BPF_K;
const JA: u16 = BPF_JMP | BPF_JA;
const RET_K: u16 = BPF_RET | BPF_K;

/// Runs `program` over `packet` and returns the number of bytes to accept (0 = drop).
/// Panics on an opcode outside the supported set or a jump out of the program: both are bugs in
/// the filter, which [`check`] would also report.
pub(super) fn run(program: &[SockFilter], packet: &[u8]) -> u32 {
    let mut acc: u32 = 0;
    let mut pc = 0usize;
    loop {
        let insn = program[pc];
        pc += 1;
        let offset = insn.k as usize;
        match insn.code {
            LD_W_ABS | LD_H_ABS | LD_B_ABS => {
                let size = match insn.code {
                    LD_W_ABS => 4,
                    LD_H_ABS => 2,
                    _ => 1,
                };
                let Some(bytes) = packet.get(offset..offset + size) else {
                    return 0;
                };
                acc = bytes.iter().fold(0, |a, b| (a << 8) | u32::from(*b));
            }
            JEQ_K => pc += usize::from(if acc == insn.k { insn.jt } else { insn.jf }),
            JGE_K => pc += usize::from(if acc >= insn.k { insn.jt } else { insn.jf }),
            JA => pc += insn.k as usize,
            RET_K => return insn.k,
            other => panic!("opcode {other:#06x} not supported by the test interpreter"),
        }
    }
}

/// The structural checks the kernel's `bpf_check_classic` makes that apply to these programs:
/// non-empty, at most `BPF_MAXINSNS` instructions, known opcodes, jumps inside the program, and the last
/// instruction a return (so execution cannot fall off the end).
pub(super) fn check(program: &[SockFilter]) -> Result<(), String> {
    if program.is_empty() || program.len() > MAX_INSTRUCTIONS {
        return Err(format!("length {}", program.len()));
    }
    for (pc, insn) in program.iter().enumerate() {
        match insn.code {
            LD_W_ABS | LD_H_ABS | LD_B_ABS | RET_K => {}
            JA => {
                if pc + 1 + insn.k as usize >= program.len() {
                    return Err(format!("instruction {pc} jumps past the end"));
                }
            }
            JEQ_K | JGE_K => {
                let furthest = pc + 1 + usize::from(insn.jt.max(insn.jf));
                if furthest >= program.len() {
                    return Err(format!(
                        "instruction {pc} jumps to {furthest}, past the end"
                    ));
                }
            }
            other => return Err(format!("instruction {pc}: unknown opcode {other:#06x}")),
        }
    }
    match program.last() {
        Some(last) if last.code == RET_K => Ok(()),
        _ => Err("does not end with a return".into()),
    }
}

#[test]
fn interpreter_loads_big_endian_and_drops_on_out_of_bounds_loads() {
    let program = [
        SockFilter {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 1,
        },
        SockFilter {
            code: JEQ_K,
            jt: 0,
            jf: 1,
            k: 0x0203_0405,
        },
        SockFilter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: 7,
        },
        SockFilter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: 9,
        },
    ];
    assert_eq!(check(&program), Ok(()));
    assert_eq!(run(&program, &[1, 2, 3, 4, 5]), 7);
    assert_eq!(run(&program, &[1, 2, 3, 4, 6]), 9);
    assert_eq!(run(&program, &[1, 2, 3, 4]), 0);
}

#[test]
fn checker_rejects_jumps_past_the_end_and_fallthrough() {
    let jump_out = [
        SockFilter {
            code: JEQ_K,
            jt: 0,
            jf: 1,
            k: 0,
        },
        SockFilter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: 0,
        },
    ];
    assert!(check(&jump_out).is_err());
    let no_ret = [SockFilter {
        code: LD_B_ABS,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    assert!(check(&no_ret).is_err());
    assert!(check(&[]).is_err());
}
