//! The operating system's CSPRNG, for states, nonces and ids.

/// Fills `buffer` from the OS. A machine that cannot provide randomness cannot run this worker
/// safely at all, so failure aborts rather than degrading to something predictable.
pub fn fill(buffer: &mut [u8]) {
    if let Err(error) = getrandom::fill(buffer) {
        panic!("the operating system's random number generator failed: {error}");
    }
}

pub fn bytes<const N: usize>() -> [u8; N] {
    let mut buffer = [0u8; N];
    fill(&mut buffer);
    buffer
}
