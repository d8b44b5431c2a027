//! Translation tests: field mappings, refusals, answers, streams (split at
//! every boundary), and round trips as properties.
