//! Test support shared by the modules' own tests.

pub(crate) mod fuzz;
