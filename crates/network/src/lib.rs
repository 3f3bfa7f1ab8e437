//! Pod networking: CNI plugin invocation behind a trait (work in progress).
