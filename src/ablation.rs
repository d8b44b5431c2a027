//! Bench-only switches (`--features bench-ablation`, `benches/ablation.sh`):
//! skip one per-request part of the gateway's work to measure what that
//! part costs under load, against the bare hop in the same run. Without the
//! feature `skip` is a constant `false` and the checks compile away; a
//! product build never reads the variable.

/// A part of every request's work that the ablation bench can skip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The whole-head deadline read (`head_deadline`): Pingora reads heads itself.
    HeadDeadline = 1,
    /// Identity, trace and forwarding headers on the upstream request.
    UpstreamHeaders = 2,
    /// Request id, rate-limit and Server-Timing headers on the answer.
    AnswerHeaders = 4,
    /// Metrics, access log and span of a request that is not an LLM call
    /// (an LLM call's settlement is never skipped).
    Logging = 8,
    /// Request id and traceparent generation.
    TraceIds = 16,
}

impl Part {
    const NAMED: [(&'static str, Part); 5] = [
        ("head", Part::HeadDeadline),
        ("upstream-headers", Part::UpstreamHeaders),
        ("answer-headers", Part::AnswerHeaders),
        ("logging", Part::Logging),
        ("ids", Part::TraceIds),
    ];
}

/// The parts named in `spec` (comma-separated names of `Part::NAMED`, or
/// `all`) as a bit set; unknown names are reported and ignored.
pub fn parse(spec: &str) -> u32 {
    spec.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .fold(0, |bits, name| {
            if name == "all" {
                return bits | Part::NAMED.iter().fold(0, |b, (_, p)| b | *p as u32);
            }
            match Part::NAMED.iter().find(|(n, _)| *n == name) {
                Some((_, part)) => bits | *part as u32,
                None => {
                    eprintln!("TOLLGATE_BENCH_SKIP: unknown part {name:?} ignored");
                    bits
                }
            }
        })
}

/// Whether this process skips `part` (`TOLLGATE_BENCH_SKIP`, read once).
#[cfg(feature = "bench-ablation")]
pub fn skip(part: Part) -> bool {
    static SKIPPED: once_cell::sync::Lazy<u32> = once_cell::sync::Lazy::new(|| {
        std::env::var("TOLLGATE_BENCH_SKIP")
            .map(|spec| parse(&spec))
            .unwrap_or(0)
    });
    *SKIPPED & part as u32 != 0
}

/// Product builds skip nothing.
#[cfg(not(feature = "bench-ablation"))]
#[inline(always)]
pub fn skip(_part: Part) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_select_their_parts() {
        assert_eq!(parse(""), 0);
        assert_eq!(parse("head"), 1);
        assert_eq!(parse("upstream-headers, answer-headers"), 6);
        assert_eq!(parse("logging,ids,nonsense"), 24);
        assert_eq!(parse("all"), 31);
    }

    #[cfg(not(feature = "bench-ablation"))]
    #[test]
    fn product_builds_skip_nothing() {
        std::env::set_var("TOLLGATE_BENCH_SKIP", "all");
        assert!(!skip(Part::HeadDeadline) && !skip(Part::Logging));
    }
}
