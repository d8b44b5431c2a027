//! The steps a translation is made of.

/// One hop of a translation (a request goes through them in order, an
/// answer in reverse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hop {
    ChatToMessages,
    MessagesToChat,
    ChatToGemini,
}
