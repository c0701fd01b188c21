//! Report stage: turning boots' outcomes into verdicts and writing them
//! (summary, results.json, JUnit XML, KTAP).

pub mod results;
