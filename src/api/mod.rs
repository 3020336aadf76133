//! Wire types of the APIs slmgate speaks.

pub mod openai;
