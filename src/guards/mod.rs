//! Payload guards for LLM routes: PII (block, redact or log) and
//! prompt-injection patterns (block or log). A guard never reports the
//! matched text — only which guard acted — so logs stay free of PII.

pub mod injection;
pub mod normalize;
pub mod pii;

use crate::config::schema::{GuardAction, GuardsConfig};
use crate::error::GatewayError;
use crate::llm::chat::ChatRequest;
use crate::metrics;
use injection::InjectionDetector;
use pii::{PiiDetector, PiiKind};

pub struct Guards {
    pii: Option<(PiiDetector, GuardAction)>,
    injection: Option<(InjectionDetector, GuardAction)>,
}

impl Guards {
    pub fn compile(config: &GuardsConfig) -> Result<Guards, String> {
        let pii = match &config.pii {
            Some(p) => {
                let kinds: Vec<PiiKind> =
                    p.detect.iter().filter_map(|k| PiiKind::parse(k)).collect();
                Some((
                    PiiDetector::new(&kinds).map_err(|e| e.to_string())?,
                    p.action,
                ))
            }
            None => None,
        };
        let injection = match &config.injection {
            Some(i) => Some((
                InjectionDetector::new(&i.patterns).map_err(|e| e.to_string())?,
                i.action,
            )),
            None => None,
        };
        Ok(Guards { pii, injection })
    }

    /// Runs the guards `enabled` on this route over every text of the
    /// request; redaction rewrites the request in place.
    pub fn apply(&self, enabled: &[String], chat: &mut ChatRequest) -> Result<(), GatewayError> {
        let wants = |name: &str| enabled.iter().any(|g| g == name);
        if let (true, Some((detector, action))) = (wants("injection"), &self.injection) {
            let mut hit = false;
            chat.for_each_text(|t| hit = hit || detector.matches(t));
            if hit {
                return act("injection", *action);
            }
        }
        if let (true, Some((detector, action))) = (wants("pii"), &self.pii) {
            match action {
                GuardAction::Redact => {
                    if chat.map_texts(|t| detector.redact(t)) > 0 {
                        metrics::inc(&metrics::GUARD_ACTIONS, &["pii", "redact"]);
                    }
                }
                GuardAction::Block | GuardAction::Log => {
                    let mut hit = false;
                    chat.for_each_text(|t| hit = hit || !detector.find(t).is_empty());
                    if hit {
                        return act("pii", *action);
                    }
                }
            }
        }
        Ok(())
    }
}

fn act(guard: &str, action: GuardAction) -> Result<(), GatewayError> {
    match action {
        GuardAction::Block => {
            metrics::inc(&metrics::GUARD_ACTIONS, &[guard, "block"]);
            Err(GatewayError::GuardBlocked(guard.to_string()))
        }
        GuardAction::Log | GuardAction::Redact => {
            metrics::inc(&metrics::GUARD_ACTIONS, &[guard, "log"]);
            tracing::warn!(guard, "guard matched (action: log)");
            Ok(())
        }
    }
}
