import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes files that hold secrets: created with the final mode from the start (never briefly
/// world-readable), written to a temporary name and renamed so a crash leaves no half file.
public enum SecureFile {
    public struct WriteError: Error, CustomStringConvertible {
        public let path: String
        public let reason: String
        public var description: String { "cannot write \(path): \(reason)" }
    }

    public static func write(_ data: Data, to path: String, mode: mode_t) throws {
        let tmp = path + ".tmp-\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_EXCL, mode)
        guard fd >= 0 else { throw WriteError(path: path, reason: String(cString: strerror(errno))) }
        var ok = fchmod(fd, mode) == 0
        data.withUnsafeBytes { raw in
            var offset = 0
            while ok && offset < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n <= 0 { ok = false } else { offset += n }
            }
        }
        ok = ok && fsync(fd) == 0
        close(fd)
        guard ok, rename(tmp, path) == 0 else {
            unlink(tmp)
            throw WriteError(path: path, reason: String(cString: strerror(errno)))
        }
    }

    /// The permission bits of `path`, or `nil` if it does not exist.
    public static func mode(of path: String) -> mode_t? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return st.st_mode & 0o777
    }
}
