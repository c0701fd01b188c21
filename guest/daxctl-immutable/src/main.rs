fn main() -> std::process::ExitCode {
    daxctl_immutable::main()
}
