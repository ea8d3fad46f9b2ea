//! The `/metrics` the speaker section reads: a speaker's (over the lab bridge, through the
//! testbed's `Speaker::metrics`) and the shared controller's, as one sample or a counter summed
//! over its labels.

use anyhow::Result;
use ferrolb_tests::daemon::parse_sample;
use ferrolb_tests::l2lab::Rig;
use tokio::task::block_in_place;

/// Metric sample prefix of the speaker's API writes.
const API_WRITES: &str = "ferrolb_speaker_api_writes_total";
/// Metric sample prefix of the controller's API writes.
const CONTROLLER_WRITES: &str = "ferrolb_controller_writes_total";

/// Sum of every sample of the counter `name` (whatever its labels) in a `/metrics` text.
fn summed(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The `/metrics` text of speaker `i`.
fn scrape(rig: &mut Rig, i: usize) -> Result<String> {
    let speaker = rig.speaker(i)?;
    block_in_place(|| speaker.metrics())
}

/// The value of `sample` (exact name and labels) on speaker `i`, 0 when absent.
pub(super) fn metric(rig: &mut Rig, i: usize, sample: &str) -> Result<f64> {
    Ok(parse_sample(&scrape(rig, i)?, sample).unwrap_or(0.0))
}

/// API writes of speaker `i` since it started.
pub(super) fn speaker_writes(rig: &mut Rig, i: usize) -> Result<f64> {
    Ok(summed(&scrape(rig, i)?, API_WRITES))
}

/// Every API write the shared controller has made (`ferrolb_controller_writes_total`, summed);
/// 0 when it cannot be read.
pub(super) fn controller_writes() -> f64 {
    let text = block_in_place(|| {
        ferrolb_tests::scenario::controller()
            .lock()
            .map_err(|_| anyhow::anyhow!("controller lock poisoned"))?
            .metrics()
    })
    .unwrap_or_default();
    summed(&text, CONTROLLER_WRITES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_writes_are_summed_over_labels() {
        let text = "# HELP ferrolb_speaker_api_writes Kubernetes API writes\n\
            ferrolb_speaker_api_writes_total{object=\"status\",result=\"ok\"} 333\n\
            ferrolb_speaker_api_writes_total{object=\"event\",result=\"ok\"} 330\n\
            ferrolb_speaker_api_writes_total{object=\"event\",result=\"error\"} 3\n\
            ferrolb_speaker_owned_ips 333\n";
        assert_eq!(summed(text, API_WRITES), 666.0);
        assert_eq!(summed("", API_WRITES), 0.0);
    }
}
