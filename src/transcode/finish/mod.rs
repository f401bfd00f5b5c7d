//! Finish: a file's other streams (audio, subtitles) and the merge of its
//! verified chunks into the output, checked end to end before it is renamed
//! into place.

pub mod merge;
pub mod side;
