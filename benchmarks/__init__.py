"""lrkit's benchmarks: side-by-side comparisons with peers (not part of the library)."""
