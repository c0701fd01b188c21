//! What an errno from SEAL or UNSEAL means for the file it was about, in
//! the words a user acts on (docs/seal.md has the full table).

/// The two requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Seal,
    Unseal,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Seal => "seal",
            Op::Unseal => "unseal",
        }
    }
}

/// One line saying what `errno` means for `file`. `immutable` is whether
/// the file carries chattr +i, the other reason for EPERM.
pub fn explain(op: Op, file: &str, errno: i32, immutable: bool) -> String {
    match errno {
        libc::ETXTBSY => format!("{file} is an active swapfile; swapoff first"),
        libc::EBUSY if op == Op::Unseal => {
            format!("{file} is mapped or has pinned pages (io_uring fixed buffer, RDMA MR); unmap or unregister first")
        }
        libc::EBUSY => format!("{file}'s block map changed while it was being sealed; try again"),
        libc::EPERM if immutable => format!("{file} is immutable (chattr +i); chattr -i it first"),
        libc::EPERM => format!("{} {file} needs CAP_LINUX_IMMUTABLE", op.name()),
        libc::EOPNOTSUPP => "this kernel or filesystem does not support block-map sealing".to_string(),
        libc::ENOSPC => format!("not enough free space to allocate {file}'s holes; it stays unsealed"),
        libc::EINVAL => format!("{file} cannot be sealed: it is a realtime or always-copy-on-write file"),
        libc::ENOENT => format!("{file} has been unlinked; only a file with a name can be sealed"),
        libc::EBADF => format!("{file} must be open for writing"),
        libc::EROFS => format!("{file} is on a read-only filesystem"),
        libc::EIO => format!("I/O error on {file}; it stays as it was"),
        libc::EUCLEAN => format!(
            "{file}'s seal is broken: a kernel without the seal changed its block map; unseal it, then seal it again"
        ),
        libc::EINTR => format!("sealing {file} was interrupted; it stays unsealed"),
        other => format!("{file}: {}", std::io::Error::from_raw_os_error(other)),
    }
}

/// The symbolic name of the errnos a user of this tool meets.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ETXTBSY => "ETXTBSY",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EUCLEAN => "EUCLEAN",
        libc::EINTR => "EINTR",
        other => return format!("errno {other}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_s_explanations() {
        let f = "/mnt/pmem0/f";
        assert_eq!(explain(Op::Unseal, f, libc::ETXTBSY, false), "/mnt/pmem0/f is an active swapfile; swapoff first");
        assert_eq!(
            explain(Op::Unseal, f, libc::EBUSY, false),
            "/mnt/pmem0/f is mapped or has pinned pages (io_uring fixed buffer, RDMA MR); unmap or unregister first"
        );
        assert!(explain(Op::Seal, f, libc::EPERM, false).ends_with("needs CAP_LINUX_IMMUTABLE"));
        assert!(explain(Op::Seal, f, libc::EPERM, true).contains("chattr +i"));
        assert_eq!(
            explain(Op::Seal, f, libc::EOPNOTSUPP, false),
            "this kernel or filesystem does not support block-map sealing"
        );
        assert!(explain(Op::Seal, f, libc::EBUSY, false).contains("try again"));
        assert!(explain(Op::Seal, f, libc::EXDEV, false).starts_with("/mnt/pmem0/f: "));
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(libc::ETXTBSY), "ETXTBSY");
        assert_eq!(errno_name(libc::EOPNOTSUPP), "EOPNOTSUPP");
        assert_eq!(errno_name(9999), "errno 9999");
    }
}
