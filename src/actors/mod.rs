//! The actors: a supervisor, one actor per hosted group, and the shared fan-out actor.
pub mod fanout;
pub mod group;
pub mod supervisor;
