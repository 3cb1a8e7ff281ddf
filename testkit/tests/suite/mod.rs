//! Test modules of the testkit integration binary.

mod fake_model;
