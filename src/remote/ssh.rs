//! A node reached over SSH (filled in by the distributed issue).
