//! Guards on the model's answer: PII (the input guard's kinds and
//! checksums) and secrets (credential shapes, and exactly the gateway's own
//! upstream credentials), redacted, blocked or logged.
//!
//! Streams are guarded without buffering them: a [`Redactor`] releases
//! text as soon as no match can still be completing in it. Every pattern
//! has a bounded length (a token's unbounded tail is swallowed after its
//! bounded head, see [`Detector::tail`]), so a match starting at `s` is
//! decided once `s + window` bytes are known: at most that many bytes are
//! held back. The scan is one state machine for whole texts and streams,
//! and nothing it decides depends on where the text was split: a stream
//! guarded chunk by chunk comes out exactly as the whole text would.

use super::pii::PiiKind;
use crate::config::schema::{GuardAction, OutputGuardsConfig};
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::{Regex, RegexSet};

/// What a detector found (its name is the placeholder's and the log's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    Email,
    Phone,
    CreditCard,
    Ssn,
    Iban,
    ApiKey,
    AwsAccessKey,
    GithubToken,
    Jwt,
    PrivateKey,
    GatewaySecret,
}

const ALL_KINDS: [OutputKind; 11] = [
    OutputKind::Email,
    OutputKind::Phone,
    OutputKind::CreditCard,
    OutputKind::Ssn,
    OutputKind::Iban,
    OutputKind::ApiKey,
    OutputKind::AwsAccessKey,
    OutputKind::GithubToken,
    OutputKind::Jwt,
    OutputKind::PrivateKey,
    OutputKind::GatewaySecret,
];

impl OutputKind {
    pub fn name(self) -> &'static str {
        match self {
            OutputKind::Email => "email",
            OutputKind::Phone => "phone",
            OutputKind::CreditCard => "credit_card",
            OutputKind::Ssn => "ssn",
            OutputKind::Iban => "iban",
            OutputKind::ApiKey => "api_key",
            OutputKind::AwsAccessKey => "aws_access_key",
            OutputKind::GithubToken => "github_token",
            OutputKind::Jwt => "jwt",
            OutputKind::PrivateKey => "private_key",
            OutputKind::GatewaySecret => "gateway_secret",
        }
    }

    pub fn placeholder(self) -> &'static str {
        match self {
            OutputKind::Email => "[REDACTED:email]",
            OutputKind::Phone => "[REDACTED:phone]",
            OutputKind::CreditCard => "[REDACTED:credit_card]",
            OutputKind::Ssn => "[REDACTED:ssn]",
            OutputKind::Iban => "[REDACTED:iban]",
            OutputKind::ApiKey => "[REDACTED:api_key]",
            OutputKind::AwsAccessKey => "[REDACTED:aws_access_key]",
            OutputKind::GithubToken => "[REDACTED:github_token]",
            OutputKind::Jwt => "[REDACTED:jwt]",
            OutputKind::PrivateKey => "[REDACTED:private_key]",
            OutputKind::GatewaySecret => "[REDACTED:gateway_secret]",
        }
    }

    pub fn guard(self) -> OutputGuard {
        match self {
            OutputKind::Email
            | OutputKind::Phone
            | OutputKind::CreditCard
            | OutputKind::Ssn
            | OutputKind::Iban => OutputGuard::Pii,
            _ => OutputGuard::Secrets,
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }

    /// False only when no match of this kind can be in `text`.
    fn may_match(self, text: &[u8]) -> bool {
        use memchr::memmem::find;
        match self {
            OutputKind::Email => memchr::memchr(b'@', text).is_some(),
            OutputKind::Phone | OutputKind::CreditCard | OutputKind::Ssn | OutputKind::Iban => {
                text.iter().any(u8::is_ascii_digit)
            }
            OutputKind::ApiKey => find(text, b"sk-").is_some(),
            OutputKind::AwsAccessKey => {
                find(text, b"AKIA").is_some() || find(text, b"ASIA").is_some()
            }
            OutputKind::GithubToken => {
                find(text, b"gh").is_some() || find(text, b"github_pat_").is_some()
            }
            OutputKind::Jwt => find(text, b"eyJ").is_some(),
            OutputKind::PrivateKey => find(text, b"-----").is_some(),
            OutputKind::GatewaySecret => true,
        }
    }

    fn confirms(self, text: &str) -> bool {
        match self {
            OutputKind::CreditCard => PiiKind::CreditCard.confirms(text),
            OutputKind::Iban => PiiKind::Iban.confirms(text),
            OutputKind::Ssn => PiiKind::Ssn.confirms(text),
            _ => true,
        }
    }
}

/// The two output guards a route can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputGuard {
    Pii,
    Secrets,
}

impl OutputGuard {
    pub fn name(self) -> &'static str {
        match self {
            OutputGuard::Pii => "pii",
            OutputGuard::Secrets => "secrets",
        }
    }
}

/// The output guards a route turns on (`output_guards:`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputGuardSet {
    pub pii: bool,
    pub secrets: bool,
}

impl OutputGuardSet {
    pub fn parse(names: &[String]) -> Result<OutputGuardSet, String> {
        super::parse_guard_names(names, "output guard", |set: &mut OutputGuardSet, name| {
            match name {
                "pii" => set.pii = true,
                "secrets" => set.secrets = true,
                _ => return false,
            }
            true
        })
    }

    pub fn is_empty(self) -> bool {
        !self.pii && !self.secrets
    }

    fn has(self, guard: OutputGuard) -> bool {
        match guard {
            OutputGuard::Pii => self.pii,
            OutputGuard::Secrets => self.secrets,
        }
    }
}

/// Room past a match's longest length for the one byte `\b` looks at on
/// each side (patterns are ASCII, boundaries are ASCII).
const SLACK: usize = 4;

/// The smallest `guards.output.holdback_bytes`: every built-in pattern's
/// window fits in it (tested), and exact secrets are cut to fit.
pub const MIN_HOLDBACK: usize = 240;

/// Longest prefix of a gateway secret matched exactly; the rest of a
/// longer one is swallowed as its tail.
const EXACT_PREFIX: usize = 128;

/// Whether a byte continues a redacted token (see [`Detector::tail`]).
type TailFn = fn(u8) -> bool;

enum Finder {
    Re(Regex),
    Exact(AhoCorasick),
}

struct Detector {
    kind: OutputKind,
    finder: Finder,
    /// Longest match in bytes (by construction of the pattern).
    max_len: usize,
    /// Bytes that continue a redacted token past its bounded head.
    tail: Option<TailFn>,
}

impl Detector {
    fn window(&self) -> usize {
        self.max_len + SLACK
    }

    fn find_at(&self, hay: &str, from: usize) -> Option<(usize, usize)> {
        // A match needs its trigger bytes: without them the regex could
        // only say no, more slowly (the email pattern has no literal
        // prefix for the regex crate's own prefilter).
        if !self.kind.may_match(&hay.as_bytes()[from.min(hay.len())..]) {
            return None;
        }
        match &self.finder {
            Finder::Re(re) => re.find_at(hay, from).map(|m| (m.start(), m.end())),
            Finder::Exact(ac) => ac
                .find(aho_corasick::Input::new(hay).range(from..))
                .map(|m| (m.start(), m.end())),
        }
    }
}

fn token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn jwt_byte(b: u8) -> bool {
    token_byte(b) || b == b'.'
}

fn pem_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'\r' | b'\n')
}

fn secret_byte(b: u8) -> bool {
    b.is_ascii_graphic() && b != b'"' && b != b'\\'
}

/// The built-in patterns, most specific first (a tie at one position goes
/// to the earlier). Lengths are each pattern's longest match; every
/// repetition is bounded so that length exists. `\b` is ASCII.
fn builtin(kind: OutputKind) -> (&'static str, usize, Option<TailFn>) {
    match kind {
        // 3 + (4 + 8 + 1 | 5) + 20
        OutputKind::ApiKey => (
            r"(?-u:\b)sk-(?:ant-[a-z0-9]{1,8}-|proj-)?[A-Za-z0-9_-]{20}",
            36,
            Some(token_byte),
        ),
        OutputKind::AwsAccessKey => (r"(?-u:\b)(?:AKIA|ASIA)[0-9A-Z]{16}(?-u:\b)", 20, None),
        // 4 + 36 | 11 + 22
        OutputKind::GithubToken => (
            r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{22})",
            40,
            Some(token_byte),
        ),
        // 3 + 160 + 1 + 3 + 4
        OutputKind::Jwt => (
            r"(?-u:\b)eyJ[A-Za-z0-9_-]{4,160}\.eyJ[A-Za-z0-9_-]{4}",
            171,
            Some(jwt_byte),
        ),
        // "-----BEGIN " 11 + 3 * 11 + "PRIVATE KEY-----" 16, then the
        // base64 body is swallowed; the END line is matched on its own
        // (see `PEM_END`).
        OutputKind::PrivateKey => (
            r"-----BEGIN (?:[A-Z0-9]{1,10} ){0,3}PRIVATE KEY-----",
            60,
            Some(pem_byte),
        ),
        // 48 + 1 + 40 + 3 * 41 + 1 + 12
        OutputKind::Email => (
            r"(?-u:\b)[A-Za-z0-9._%+-]{1,48}@[A-Za-z0-9-]{1,40}(?:\.[A-Za-z0-9-]{1,40}){0,3}\.[A-Za-z]{2,12}(?-u:\b)",
            225,
            None,
        ),
        // 4 + 7 * 5 + 5
        OutputKind::Iban => (
            r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?-u:\b)",
            44,
            None,
        ),
        // 1 + 18 * 2
        OutputKind::CreditCard => (r"(?-u:\b)[0-9](?:[ -]?[0-9]){12,18}(?-u:\b)", 37, None),
        OutputKind::Ssn => (r"(?-u:\b)[0-9]{3}-[0-9]{2}-[0-9]{4}(?-u:\b)", 11, None),
        // International: 1 + 3 + 1 + 4 * 7 + 4 (the longest alternative).
        OutputKind::Phone => (
            concat!(
                r"(?:\+[0-9]{1,3}[ .-]?(?:\(?[0-9]{1,4}\)?[ .-]?){1,4}[0-9]{2,4}(?-u:\b))",
                r"|(?:\([0-9]{3}\) ?[0-9]{3}[ .-][0-9]{4}(?-u:\b))",
                r"|(?:(?-u:\b)[0-9]{3}[.-][0-9]{3}[.-][0-9]{4}(?-u:\b))"
            ),
            37,
            None,
        ),
        OutputKind::GatewaySecret => ("", 0, None),
    }
}

/// A PEM key's last line (after its swallowed body): 9 + 33 + 16.
const PEM_END: (&str, usize) = (r"-----END (?:[A-Z0-9]{1,10} ){0,3}PRIVATE KEY-----", 58);

/// Scan order: exact secrets, credential shapes, then PII.
const ORDER: [OutputKind; 10] = [
    OutputKind::PrivateKey,
    OutputKind::Jwt,
    OutputKind::ApiKey,
    OutputKind::GithubToken,
    OutputKind::AwsAccessKey,
    OutputKind::Email,
    OutputKind::Iban,
    OutputKind::CreditCard,
    OutputKind::Ssn,
    OutputKind::Phone,
];

/// The compiled output guards of a configuration.
pub struct OutputScanner {
    detectors: Vec<Detector>,
    /// Every regex detector's pattern in one set: one pass over a whole
    /// text says which detectors can match in it at all (`absent_in`).
    regex_set: RegexSet,
    /// Per detector: its pattern's index in `regex_set` (regex ones only).
    set_index: Vec<Option<usize>>,
    pii_action: Option<GuardAction>,
    secrets_action: Option<GuardAction>,
}

impl std::fmt::Debug for OutputScanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputScanner")
            .field("detectors", &self.detectors.len())
            .finish_non_exhaustive()
    }
}

impl OutputScanner {
    /// `secrets` are the gateway's own credentials (exact values; shorter
    /// than 8 bytes ignored: too likely to occur in ordinary text).
    pub fn compile(
        config: &OutputGuardsConfig,
        secrets: &[String],
    ) -> Result<OutputScanner, String> {
        let mut detectors = Vec::new();
        let pii_kinds: Vec<PiiKind> = config
            .pii
            .as_ref()
            .map(|p| p.detect.iter().filter_map(|k| PiiKind::parse(k)).collect())
            .unwrap_or_default();
        if config.secrets.is_some() {
            let mut exact: Vec<&[u8]> = secrets
                .iter()
                .map(|s| s.as_bytes())
                .filter(|s| s.len() >= 8)
                .map(|s| &s[..s.len().min(EXACT_PREFIX)])
                .collect();
            exact.sort_unstable();
            exact.dedup();
            if !exact.is_empty() {
                let max_len = exact.iter().map(|s| s.len()).max().unwrap_or(0);
                let ac = AhoCorasickBuilder::new()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&exact)
                    .map_err(|e| e.to_string())?;
                detectors.push(Detector {
                    kind: OutputKind::GatewaySecret,
                    finder: Finder::Exact(ac),
                    max_len,
                    tail: Some(secret_byte),
                });
            }
        }
        for kind in ORDER {
            let wanted = match kind.guard() {
                OutputGuard::Secrets => config.secrets.is_some(),
                OutputGuard::Pii => pii_kinds.iter().any(|p| pii_of(kind) == Some(*p)),
            };
            if !wanted {
                continue;
            }
            let (pattern, max_len, tail) = builtin(kind);
            let re = Regex::new(pattern).map_err(|e| e.to_string())?;
            detectors.push(Detector {
                kind,
                finder: Finder::Re(re),
                max_len,
                tail,
            });
            if kind == OutputKind::PrivateKey {
                detectors.push(Detector {
                    kind,
                    finder: Finder::Re(Regex::new(PEM_END.0).map_err(|e| e.to_string())?),
                    max_len: PEM_END.1,
                    tail: None,
                });
            }
        }
        let mut patterns = Vec::new();
        let set_index = detectors
            .iter()
            .map(|d| match &d.finder {
                Finder::Re(re) => {
                    patterns.push(re.as_str().to_string());
                    Some(patterns.len() - 1)
                }
                Finder::Exact(_) => None,
            })
            .collect();
        let regex_set = RegexSet::new(&patterns).map_err(|e| e.to_string())?;
        Ok(OutputScanner {
            detectors,
            regex_set,
            set_index,
            pii_action: config.pii.as_ref().map(|p| p.action),
            secrets_action: config.secrets.as_ref().map(|s| s.action),
        })
    }

    /// Most bytes a stream's text channel holds back.
    pub fn window(&self) -> usize {
        self.detectors
            .iter()
            .map(Detector::window)
            .max()
            .unwrap_or(0)
    }

    fn action(&self, kind: OutputKind) -> GuardAction {
        let action = match kind.guard() {
            OutputGuard::Pii => self.pii_action,
            OutputGuard::Secrets => self.secrets_action,
        };
        action.unwrap_or(GuardAction::Log)
    }

    /// The gateway's own secrets replaced in raw bytes: for a body that is
    /// not a model answer (an upstream's error), where nothing else is
    /// rewritten. `None` when none occurs.
    pub fn scrub_exact(&self, set: OutputGuardSet, body: &[u8]) -> Option<Vec<u8>> {
        if !set.secrets {
            return None;
        }
        let ac = self.detectors.iter().find_map(|d| match &d.finder {
            Finder::Exact(ac) => Some(ac),
            Finder::Re(_) => None,
        })?;
        if !ac.is_match(body) {
            return None;
        }
        let placeholder = OutputKind::GatewaySecret.placeholder().as_bytes();
        let with = vec![placeholder; ac.patterns_len()];
        Some(ac.replace_all_bytes(body, &with))
    }

    /// Whether `set` turns on at least one configured detector.
    pub fn guards_any(&self, set: OutputGuardSet) -> bool {
        self.detectors.iter().any(|d| set.has(d.kind.guard()))
    }

    /// Per detector: whether it cannot match anywhere in `text`. A regex
    /// that matches nowhere in the whole text matches at no offset of it
    /// either, so a whole text (a JSON answer's field) is scanned once for
    /// all of them; the few candidates are then searched one by one.
    fn absent_in(&self, text: &str) -> Vec<bool> {
        let present = self.regex_set.matches(text);
        self.set_index
            .iter()
            .map(|i| i.is_some_and(|i| !present.matched(i)))
            .collect()
    }

    /// One decision from `pos` on: the leftmost confirmed match, or how far
    /// the text is clean. With `complete` false, a match is decided only
    /// once its whole window is known (see the module doc).
    fn step(
        &self,
        set: OutputGuardSet,
        hay: &str,
        pos: usize,
        resume: &mut [usize],
        absent: &[bool],
        complete: bool,
    ) -> Step {
        let len = hay.len();
        let mut best: Option<(usize, usize, usize)> = None;
        let mut bound = len;
        for (i, d) in self.detectors.iter().enumerate() {
            if !set.has(d.kind.guard()) || absent.get(i).copied().unwrap_or(false) {
                continue;
            }
            loop {
                let from = resume[i].max(pos);
                let undecided = floor_boundary(hay, len.saturating_sub(d.window())).max(from);
                match d.find_at(hay, from) {
                    None => {
                        if !complete {
                            bound = bound.min(undecided);
                            // Nothing starts before `undecided` (it would
                            // be decided, and found): the next search
                            // begins there, not at the held text's start.
                            resume[i] = undecided;
                        }
                        break;
                    }
                    Some((s, _)) if !complete && s + d.window() > len => {
                        bound = bound.min(undecided);
                        resume[i] = undecided;
                        break;
                    }
                    Some((s, e)) => {
                        if d.kind.confirms(&hay[s..e]) {
                            if best.is_none_or(|b| s < b.0) {
                                best = Some((s, e, i));
                            }
                            break;
                        }
                        // Rejected (checksum): this detector goes on past it.
                        resume[i] = if e > s { e } else { next_boundary(hay, s) };
                    }
                }
            }
        }
        match best {
            Some((start, end, i)) if start < bound => Step::Match {
                start,
                end,
                detector: i,
            },
            Some((start, ..)) => Step::Clean(bound.min(start)),
            None => Step::Clean(bound),
        }
    }
}

fn pii_of(kind: OutputKind) -> Option<PiiKind> {
    Some(match kind {
        OutputKind::Email => PiiKind::Email,
        OutputKind::Phone => PiiKind::Phone,
        OutputKind::CreditCard => PiiKind::CreditCard,
        OutputKind::Ssn => PiiKind::Ssn,
        OutputKind::Iban => PiiKind::Iban,
        _ => return None,
    })
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn next_boundary(s: &str, mut i: usize) -> usize {
    i += 1;
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i.min(s.len())
}

enum Step {
    Match {
        start: usize,
        end: usize,
        detector: usize,
    },
    Clean(usize),
}

/// What the output guards found in one answer: kinds (for the access log)
/// and the actions taken (for metrics). Never the text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Findings {
    kinds: u16,
    /// Bit `guard * 3 + action`.
    actions: u8,
}

impl Findings {
    fn add(&mut self, kind: OutputKind, action: GuardAction) {
        self.kinds |= kind.bit();
        let a = match action {
            GuardAction::Block => 0,
            GuardAction::Redact => 1,
            GuardAction::Log => 2,
        };
        let g = match kind.guard() {
            OutputGuard::Pii => 0,
            OutputGuard::Secrets => 1,
        };
        self.actions |= 1 << (g * 3 + a);
    }

    pub fn merge(&mut self, other: Findings) {
        self.kinds |= other.kinds;
        self.actions |= other.actions;
    }

    pub fn is_empty(&self) -> bool {
        self.kinds == 0
    }

    /// The kinds found, in a fixed order.
    pub fn kinds(&self) -> Vec<&'static str> {
        ALL_KINDS
            .iter()
            .filter(|k| self.kinds & k.bit() != 0)
            .map(|k| k.name())
            .collect()
    }

    /// `(guard, action)` pairs taken, for `tollgate_guard_actions_total`.
    pub fn actions(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        for (g, guard) in ["pii", "secrets"].into_iter().enumerate() {
            for (a, action) in ["block", "redact", "log"].into_iter().enumerate() {
                if self.actions & (1 << (g * 3 + a)) != 0 {
                    out.push((guard, action));
                }
            }
        }
        out
    }
}

/// Guards one text channel of an answer (a message's text, a tool call's
/// arguments) as it arrives in pieces: [`Redactor::push`] appends what may
/// be released, [`Redactor::finish`] the rest. The original text is kept
/// only from a few bytes before the release point (the look-behind) on.
#[derive(Debug, Default)]
pub struct Redactor {
    /// Original text from `base` on.
    buf: String,
    /// Released up to here (index into `buf`); the scan continues here.
    pos: usize,
    /// Per detector: where its search resumes after a rejected match.
    resume: Vec<usize>,
    /// Per detector: known not to match in this channel's whole text.
    absent: Vec<bool>,
    /// A redacted token's tail is being swallowed.
    swallow: Option<TailFn>,
    blocked: Option<OutputKind>,
    pub findings: Findings,
}

/// Bytes of original text kept before the release point: `\b` looks at one.
const CONTEXT: usize = 8;

impl Redactor {
    pub fn new() -> Redactor {
        Redactor::default()
    }

    /// Adds `text`; appends the releasable part, guarded, to `out`. `Some`
    /// when a blocking match was found: `out` then ends just before it and
    /// nothing more is released.
    pub fn push(
        &mut self,
        scanner: &OutputScanner,
        set: OutputGuardSet,
        text: &str,
        out: &mut String,
    ) -> Option<OutputKind> {
        if self.blocked.is_some() {
            return self.blocked;
        }
        self.buf.push_str(text);
        self.drive(scanner, set, false, out)
    }

    /// The end of the channel: releases what was held back.
    pub fn finish(
        &mut self,
        scanner: &OutputScanner,
        set: OutputGuardSet,
        out: &mut String,
    ) -> Option<OutputKind> {
        if self.blocked.is_some() {
            return self.blocked;
        }
        let blocked = self.drive(scanner, set, true, out);
        self.buf.clear();
        self.pos = 0;
        self.resume.iter_mut().for_each(|r| *r = 0);
        self.swallow = None;
        blocked
    }

    /// Bytes received but not released yet.
    pub fn held(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn drive(
        &mut self,
        scanner: &OutputScanner,
        set: OutputGuardSet,
        complete: bool,
        out: &mut String,
    ) -> Option<OutputKind> {
        self.resume.resize(scanner.detectors.len(), 0);
        loop {
            if let Some(tail) = self.swallow {
                let rest = &self.buf.as_bytes()[self.pos..];
                self.pos += rest.iter().take_while(|b| tail(**b)).count();
                if self.pos == self.buf.len() && !complete {
                    break;
                }
                self.swallow = None;
            }
            match scanner.step(
                set,
                &self.buf,
                self.pos,
                &mut self.resume,
                &self.absent,
                complete,
            ) {
                Step::Clean(upto) => {
                    out.push_str(&self.buf[self.pos..upto]);
                    self.pos = upto;
                    break;
                }
                Step::Match {
                    start,
                    end,
                    detector,
                } => {
                    out.push_str(&self.buf[self.pos..start]);
                    let d = &scanner.detectors[detector];
                    let action = scanner.action(d.kind);
                    self.findings.add(d.kind, action);
                    match action {
                        GuardAction::Block => {
                            self.blocked = Some(d.kind);
                            return self.blocked;
                        }
                        GuardAction::Redact => {
                            out.push_str(d.kind.placeholder());
                            self.swallow = d.tail;
                        }
                        GuardAction::Log => out.push_str(&self.buf[start..end]),
                    }
                    self.pos = end;
                }
            }
        }
        self.compact();
        None
    }

    /// Drops released text but the look-behind context.
    fn compact(&mut self) {
        let keep_from = floor_boundary(&self.buf, self.pos.saturating_sub(CONTEXT));
        if keep_from < 4096 && keep_from * 2 < self.buf.len() {
            return;
        }
        self.buf.drain(..keep_from);
        self.pos -= keep_from;
        self.resume
            .iter_mut()
            .for_each(|r| *r = r.saturating_sub(keep_from));
    }
}

/// A whole text guarded: `(text to send, blocked)`; the text is `None`
/// when unchanged.
pub fn guard_text(
    scanner: &OutputScanner,
    set: OutputGuardSet,
    text: &str,
    findings: &mut Findings,
) -> (Option<String>, Option<OutputKind>) {
    let mut r = Redactor {
        absent: scanner.absent_in(text),
        ..Redactor::new()
    };
    let mut out = String::with_capacity(text.len());
    let blocked = r
        .push(scanner, set, text, &mut out)
        .or_else(|| r.finish(scanner, set, &mut out));
    findings.merge(r.findings);
    if blocked.is_none() && out == text {
        return (None, None);
    }
    (Some(out), blocked)
}

// The crate's other guard tests (llm::output_guard) build their scanners
// and split their answers with these helpers.
#[cfg(test)]
pub(crate) mod tests;
