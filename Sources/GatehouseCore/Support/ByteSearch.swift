#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension UnsafeBufferPointer where Element == UInt8 {
    /// The index of the first `byte` in `self[start..<end]`, found with libc's `memchr`
    /// (vectorised), not a Swift loop over every byte. `nil` when there is none or the range is
    /// empty.
    func index(of byte: UInt8, from start: Int, to end: Int) -> Int? {
        guard let base = baseAddress, start < end else { return nil }
        precondition(start >= 0 && end <= count, "byte search outside the buffer")
        guard let found = memchr(base + start, Int32(byte), end - start) else { return nil }
        return Int(bitPattern: found) - Int(bitPattern: base)
    }
}
