//! The integer types of a tile's co-occurrence counts: `u16` where no count of the tile
//! can exceed 65,535, `u32` otherwise (see [`crate::cooccurrence`]).

/// An integer type of a tile's counts.
pub trait Count: Copy + Default + PartialEq + Send + Sync + std::ops::AddAssign + 'static {
    /// The largest count it holds.
    const MAX: u64;
    /// One.
    const ONE: Self;
    /// `n`, which fits (`n <= MAX`).
    fn of(n: u32) -> Self;
    /// Its value.
    fn get(self) -> u32;
}

impl Count for u16 {
    const MAX: u64 = u16::MAX as u64;
    const ONE: Self = 1;
    #[inline(always)]
    fn of(n: u32) -> Self {
        debug_assert!(u64::from(n) <= <Self as Count>::MAX);
        n as u16
    }
    #[inline(always)]
    fn get(self) -> u32 {
        u32::from(self)
    }
}

impl Count for u32 {
    const MAX: u64 = u32::MAX as u64;
    const ONE: Self = 1;
    #[inline(always)]
    fn of(n: u32) -> Self {
        n
    }
    #[inline(always)]
    fn get(self) -> u32 {
        self
    }
}
