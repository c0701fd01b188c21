//! Report stage: turning boots' outcomes into verdicts and writing them
//! (summary, results.json, JUnit XML, KTAP, and a self-contained HTML page),
//! and the history of cases over nights of merged results (`history`).

pub mod history;
pub mod html;
pub mod known;
pub mod results;
