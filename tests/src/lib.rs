//! Black-box tests of the token server over real HTTP; the tests live in `tests/`.
