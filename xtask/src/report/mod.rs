//! Report stage: turning boots' outcomes into verdicts and writing them
//! (summary, results.json, JUnit XML, KTAP, and a self-contained HTML page).

pub mod html;
pub mod results;
