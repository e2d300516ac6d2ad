/// A small strict JSON reader for the few fields the gateway reads out of request bodies and
/// provider payloads (model, stream flags, usage), straight from the bytes into a typed tree.
///
/// Hand-written rather than `JSONSerialization`: Foundation's parser builds `NSDictionary`s that
/// are then bridged and cast value by value, which cost more than the rest of the request's
/// handling put together (see `Benchmarks/`). This reader follows RFC 8259 strictly (no
/// comments, trailing commas, leading zeros, bare control characters or invalid UTF-8), is
/// bounded in depth, and never traps on malformed input.
public enum MiniJSON {
    public indirect enum Value: Sendable, Equatable {
        case null
        case bool(Bool)
        case number(Double)
        case string(String)
        case array([Value])
        case object([String: Value])

        public var int: Int? {
            if case .number(let n) = self, n.isFinite, n.rounded() == n, abs(n) < 9.0e15 { return Int(n) }
            return nil
        }

        public var string: String? {
            if case .string(let s) = self { return s }
            return nil
        }

        public var bool: Bool? {
            if case .bool(let b) = self { return b }
            return nil
        }
    }

    /// Deeper nesting is refused (`nil`), whatever the caller checked before.
    public static let maxDepth = 256

    /// Parses a JSON object; `nil` for anything else or invalid JSON.
    public static func parseObject(_ bytes: some Collection<UInt8>) -> [String: Value]? {
        if let result = bytes.withContiguousStorageIfAvailable({ parseObject(buffer: $0) }) { return result }
        return Array(bytes).withUnsafeBufferPointer { parseObject(buffer: $0) }
    }

    /// Like ``parseObject(_:)`` — the same documents are valid — but only the top-level members
    /// named in `keys` are kept; every other value is checked and skipped without being built
    /// (a chat request's `messages`, a completion's `choices`).
    public static func parseObject(_ bytes: some Collection<UInt8>, keeping keys: Set<String>) -> [String: Value]? {
        parseObject(bytes, keeping: KeySet(keys))
    }

    /// Like ``parseObject(_:keeping:)-(_,Set<String>)`` with the names prepared once: callers on the
    /// hot path keep a static `KeySet`.
    public static func parseObject(_ bytes: some Collection<UInt8>, keeping keys: KeySet) -> [String: Value]? {
        if let result = bytes.withContiguousStorageIfAvailable({ parseObject(buffer: $0, keeping: keys) }) { return result }
        return Array(bytes).withUnsafeBufferPointer { parseObject(buffer: $0, keeping: keys) }
    }

    /// The top-level member names a caller wants built. A key that is plain ASCII without
    /// escapes (every key a provider sends) is compared on its bytes, so the members that are
    /// skipped never become `String`s or get hashed; any other key is decoded and compared as text.
    public struct KeySet: Sendable {
        let names: [String]
        let utf8: [[UInt8]]

        public init(_ names: some Sequence<String>) {
            let unique = Array(Set(names))
            self.names = unique
            self.utf8 = unique.map { Array($0.utf8) }
        }

        public func contains(_ name: String) -> Bool { names.contains(name) }

        /// The kept name spelled by `raw`, if any.
        func name(matching raw: UnsafeBufferPointer<UInt8>) -> String? {
            candidates: for k in 0..<utf8.count where utf8[k].count == raw.count {
                let name = utf8[k]
                for j in 0..<raw.count where name[j] != raw[j] { continue candidates }
                return names[k]
            }
            return nil
        }
    }

    static func parseObject(buffer: UnsafeBufferPointer<UInt8>, keeping keys: KeySet? = nil) -> [String: Value]? {
        var reader = Reader(bytes: buffer)
        reader.keep = keys
        reader.skipWhitespace()
        guard reader.peek() == UInt8(ascii: "{"), case .object(let object)? = reader.value(depth: 0) else { return nil }
        reader.skipWhitespace()
        guard reader.atEnd else { return nil }
        return object
    }

    struct Reader {
        let bytes: UnsafeBufferPointer<UInt8>
        var i = 0
        /// When set, the top-level members to build (the others are skipped).
        var keep: KeySet? = nil

        var atEnd: Bool { i >= bytes.count }

        @inline(__always)
        func peek() -> UInt8? { i < bytes.count ? bytes[i] : nil }

        @inline(__always)
        mutating func skipWhitespace() {
            while i < bytes.count {
                let b = bytes[i]
                guard b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 else { return }
                i += 1
            }
        }

        /// After a member or an element: `,` (`false`: more follow) or the closing bracket
        /// (`true`), the reader moved past it; `nil` for anything else.
        @inline(__always)
        mutating func commaOrClose(_ close: UInt8) -> Bool? {
            skipWhitespace()
            switch peek() {
            case UInt8(ascii: ","):
                i += 1
                return false
            case close:
                i += 1
                return true
            default:
                return nil
            }
        }

        mutating func literal(_ text: StaticString) -> Bool {
            let n = text.utf8CodeUnitCount
            guard i + n <= bytes.count else { return false }
            let p = text.utf8Start
            for k in 0..<n where bytes[i + k] != p[k] { return false }
            i += n
            return true
        }

        mutating func value(depth: Int) -> Value? {
            guard depth < MiniJSON.maxDepth, let b = peek() else { return nil }
            switch b {
            case UInt8(ascii: "{"): return object(depth: depth + 1)
            case UInt8(ascii: "["): return array(depth: depth + 1)
            case UInt8(ascii: "\""): return string().map(Value.string)
            case UInt8(ascii: "t"): return literal("true") ? .bool(true) : nil
            case UInt8(ascii: "f"): return literal("false") ? .bool(false) : nil
            case UInt8(ascii: "n"): return literal("null") ? .null : nil
            default: return number().map(Value.number)
            }
        }

        mutating func object(depth: Int) -> Value? {
            i += 1  // {
            var members: [String: Value] = [:]
            skipWhitespace()
            if peek() == UInt8(ascii: "}") {
                i += 1
                return .object(members)
            }
            while true {
                skipWhitespace()
                guard peek() == UInt8(ascii: "\"") else { return nil }
                let key: String?
                if depth == 1, let keep {
                    // A top-level key of a filtered parse: only a kept one is built.
                    if let raw = plainKey() {
                        key = keep.name(matching: raw)
                    } else {
                        guard let decoded = string() else { return nil }
                        key = keep.contains(decoded) ? decoded : nil
                    }
                } else {
                    guard let decoded = string() else { return nil }
                    key = decoded
                }
                skipWhitespace()
                guard peek() == UInt8(ascii: ":") else { return nil }
                i += 1
                skipWhitespace()
                if let key {
                    guard let member = value(depth: depth) else { return nil }
                    members[key] = member
                } else {
                    guard skip(depth: depth) else { return nil }
                }
                guard let closed = commaOrClose(UInt8(ascii: "}")) else { return nil }
                if closed { return .object(members) }
            }
        }

        mutating func array(depth: Int) -> Value? {
            i += 1  // [
            var elements: [Value] = []
            skipWhitespace()
            if peek() == UInt8(ascii: "]") {
                i += 1
                return .array(elements)
            }
            while true {
                skipWhitespace()
                guard let element = value(depth: depth) else { return nil }
                elements.append(element)
                guard let closed = commaOrClose(UInt8(ascii: "]")) else { return nil }
                if closed { return .array(elements) }
            }
        }

        /// Checks one value as ``value(depth:)`` would, without building it.
        mutating func skip(depth: Int) -> Bool {
            guard depth < MiniJSON.maxDepth, let b = peek() else { return false }
            switch b {
            case UInt8(ascii: "{"):
                i += 1
                skipWhitespace()
                if peek() == UInt8(ascii: "}") {
                    i += 1
                    return true
                }
                while true {
                    skipWhitespace()
                    guard peek() == UInt8(ascii: "\""), skipString() else { return false }
                    skipWhitespace()
                    guard peek() == UInt8(ascii: ":") else { return false }
                    i += 1
                    skipWhitespace()
                    guard skip(depth: depth + 1) else { return false }
                    guard let closed = commaOrClose(UInt8(ascii: "}")) else { return false }
                    if closed { return true }
                }
            case UInt8(ascii: "["):
                i += 1
                skipWhitespace()
                if peek() == UInt8(ascii: "]") {
                    i += 1
                    return true
                }
                while true {
                    skipWhitespace()
                    guard skip(depth: depth + 1) else { return false }
                    guard let closed = commaOrClose(UInt8(ascii: "]")) else { return false }
                    if closed { return true }
                }
            case UInt8(ascii: "\""): return skipString()
            case UInt8(ascii: "t"): return literal("true")
            case UInt8(ascii: "f"): return literal("false")
            case UInt8(ascii: "n"): return literal("null")
            default: return number() != nil
            }
        }

        /// Checks a string as ``string()`` would (escapes, surrogate pairs, control characters,
        /// UTF-8), without building it. Escapes are ASCII, so the raw bytes are valid UTF-8
        /// exactly when the decoded string is.
        mutating func skipString() -> Bool {
            i += 1  // "
            let start = i
            var ascii = true
            while i < bytes.count {
                let b = bytes[i]
                if b == UInt8(ascii: "\"") {
                    let valid = ascii || String(validating: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self) != nil
                    i += 1
                    return valid
                }
                if b < 0x20 { return false }
                if b >= 0x80 { ascii = false }
                i += 1
                guard b == UInt8(ascii: "\\") else { continue }
                guard let e = peek() else { return false }
                i += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                    UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    continue
                case UInt8(ascii: "u"):
                    guard let scalar = hex4() else { return false }
                    if (0xD800..<0xDC00).contains(scalar) {
                        guard literal("\\u"), let low = hex4(), (0xDC00..<0xE000).contains(low) else { return false }
                    } else if (0xDC00..<0xE000).contains(scalar) {
                        return false
                    }
                default: return false
                }
            }
            return false
        }

        /// A string starting at the opening quote made only of printable ASCII without escapes:
        /// its bytes (quotes excluded), the reader moved past it. Anything else: `nil`, the
        /// reader not moved (``string()`` reads it).
        mutating func plainKey() -> UnsafeBufferPointer<UInt8>? {
            var j = i + 1
            while j < bytes.count {
                let b = bytes[j]
                if b == UInt8(ascii: "\"") {
                    let raw = UnsafeBufferPointer(rebasing: bytes[(i + 1)..<j])
                    i = j + 1
                    return raw
                }
                guard b >= 0x20, b < 0x80, b != UInt8(ascii: "\\") else { return nil }
                j += 1
            }
            return nil
        }

        /// A string starting at the opening quote; escapes decoded, UTF-8 validated.
        mutating func string() -> String? {
            i += 1  // "
            let start = i
            var ascii = true
            // Fast path: no escapes.
            while i < bytes.count {
                let b = bytes[i]
                if b == UInt8(ascii: "\"") {
                    let raw = UnsafeBufferPointer(rebasing: bytes[start..<i])
                    // ASCII is valid UTF-8 as it stands: the non-validating initialiser is the
                    // fast one (the validating one takes a generic path, ~1,000 instructions
                    // for a short key).
                    let text = ascii ? String(decoding: raw, as: UTF8.self) : String(validating: raw, as: UTF8.self)
                    i += 1
                    return text
                }
                if b == UInt8(ascii: "\\") { break }
                if b < 0x20 { return nil }
                if b >= 0x80 { ascii = false }
                i += 1
            }
            guard i < bytes.count else { return nil }
            var out = Array(bytes[start..<i])
            while i < bytes.count {
                let b = bytes[i]
                if b == UInt8(ascii: "\"") {
                    i += 1
                    return String(validating: out, as: UTF8.self)
                }
                if b < 0x20 { return nil }
                if b != UInt8(ascii: "\\") {
                    out.append(b)
                    i += 1
                    continue
                }
                i += 1
                guard let e = peek() else { return nil }
                i += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    guard var scalar = hex4() else { return nil }
                    if (0xD800..<0xDC00).contains(scalar) {
                        // A high surrogate must be followed by an escaped low one.
                        guard literal("\\u"), let low = hex4(), (0xDC00..<0xE000).contains(low) else { return nil }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00..<0xE000).contains(scalar) {
                        return nil
                    }
                    guard let s = Unicode.Scalar(scalar) else { return nil }
                    out.append(contentsOf: String(Character(s)).utf8)
                default: return nil
                }
            }
            return nil
        }

        mutating func hex4() -> UInt32? {
            guard i + 4 <= bytes.count else { return nil }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let b = bytes[i]
                let d: UInt8
                switch b {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): d = b - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): d = b - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): d = b - UInt8(ascii: "A") + 10
                default: return nil
                }
                v = v << 4 | UInt32(d)
                i += 1
            }
            return v
        }

        /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
        mutating func number() -> Double? {
            let start = i
            var simple = true  // an integer of at most 15 digits: computed exactly, no String
            var negative = false
            if peek() == UInt8(ascii: "-") {
                negative = true
                i += 1
            }
            guard let first = peek(), first >= UInt8(ascii: "0"), first <= UInt8(ascii: "9") else { return nil }
            var integer: Int64 = 0
            var digits = 0
            if first == UInt8(ascii: "0") {
                i += 1
                digits = 1
            } else {
                while let d = peek(), d >= UInt8(ascii: "0"), d <= UInt8(ascii: "9") {
                    if digits < 15 { integer = integer * 10 + Int64(d - UInt8(ascii: "0")) }
                    digits += 1
                    i += 1
                }
            }
            if digits > 15 { simple = false }
            if peek() == UInt8(ascii: ".") {
                simple = false
                i += 1
                guard let d = peek(), d >= UInt8(ascii: "0"), d <= UInt8(ascii: "9") else { return nil }
                while let d = peek(), d >= UInt8(ascii: "0"), d <= UInt8(ascii: "9") { i += 1 }
            }
            if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
                simple = false
                i += 1
                if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { i += 1 }
                guard let d = peek(), d >= UInt8(ascii: "0"), d <= UInt8(ascii: "9") else { return nil }
                while let d = peek(), d >= UInt8(ascii: "0"), d <= UInt8(ascii: "9") { i += 1 }
            }
            if simple { return Double(negative ? -integer : integer) }
            let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
            return Double(text)
        }
    }
}

// MARK: - Scanning without building

extension MiniJSON {
    /// A member's name while its object is scanned: the raw bytes of a plain key (printable
    /// ASCII without escapes, as every key a provider sends), otherwise the decoded text. Only
    /// valid inside the visit that receives it.
    public struct Key {
        let raw: UnsafeBufferPointer<UInt8>
        let decoded: String?

        /// The name as text.
        public var text: String { decoded ?? String(decoding: raw, as: UTF8.self) }

        /// Whether the member is named `name`. JSON names compare by their decoded text, so an
        /// escaped spelling (`"mod\u0065l"`) matches too, as in ``parseObject(_:)``'s dictionary.
        public func `is`(_ name: StaticString) -> Bool {
            let count = name.utf8CodeUnitCount
            if let decoded {
                return decoded == String(decoding: UnsafeBufferPointer(start: name.utf8Start, count: count), as: UTF8.self)
            }
            guard raw.count == count else { return false }
            let p = name.utf8Start
            for k in 0..<count where raw[k] != p[k] { return false }
            return true
        }
    }

    /// Reads the values of an object's members as ``scanObject(_:_:)`` meets them, without
    /// building a tree: no `Value` boxes, no dictionaries. Each member's value is read at most
    /// once, with the reader for the type wanted (a value of another type is checked and
    /// skipped, and the reader answers `nil`); a value not read is checked and skipped. The
    /// whole document is validated exactly as ``parseObject(_:)`` validates it.
    public struct Scanner {
        var reader: Reader
        /// What ``Reader/value(depth:)`` would be given for the value at the cursor.
        var depth: Int
        /// The current member's value was read or skipped.
        var consumed = true
        /// The document is not valid JSON; every read answers `nil` from here on.
        private(set) var failed = false

        init(bytes: UnsafeBufferPointer<UInt8>) {
            self.reader = Reader(bytes: bytes)
            self.depth = 0
        }

        /// Claims the current value for one read.
        private mutating func take() -> Bool {
            guard !consumed, !failed else { return false }
            consumed = true
            guard depth < MiniJSON.maxDepth, reader.peek() != nil else {
                failed = true
                return false
            }
            return true
        }

        private mutating func skipTaken() {
            if !reader.skip(depth: depth) { failed = true }
        }

        /// The value if it is a string.
        public mutating func string() -> String? {
            guard take() else { return nil }
            guard reader.peek() == UInt8(ascii: "\"") else {
                skipTaken()
                return nil
            }
            guard let text = reader.string() else {
                failed = true
                return nil
            }
            return text
        }

        /// The value if it is `true` or `false`.
        public mutating func bool() -> Bool? {
            guard take() else { return nil }
            switch reader.peek() {
            case UInt8(ascii: "t"):
                if reader.literal("true") { return true }
            case UInt8(ascii: "f"):
                if reader.literal("false") { return false }
            default:
                skipTaken()
                return nil
            }
            failed = true
            return nil
        }

        /// The value if it is a number that is a whole number (``Value/int``'s rule).
        public mutating func int() -> Int? {
            guard take() else { return nil }
            guard let b = reader.peek(), b == UInt8(ascii: "-") || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9")) else {
                skipTaken()
                return nil
            }
            guard let number = reader.number() else {
                failed = true
                return nil
            }
            return Value.number(number).int
        }

        /// The number of elements if the value is an array (each one checked, none built).
        public mutating func arrayCount() -> Int? {
            guard take() else { return nil }
            guard reader.peek() == UInt8(ascii: "[") else {
                skipTaken()
                return nil
            }
            reader.i += 1
            reader.skipWhitespace()
            if reader.peek() == UInt8(ascii: "]") {
                reader.i += 1
                return 0
            }
            var count = 0
            while true {
                reader.skipWhitespace()
                guard reader.skip(depth: depth + 1) else { break }
                count += 1
                guard let closed = reader.commaOrClose(UInt8(ascii: "]")) else { break }
                if closed { return count }
            }
            failed = true
            return nil
        }

        /// If the value is an object, `visit` is called with each of its members in document
        /// order and the answer is `true`; otherwise the value is skipped and the answer is `false`.
        @discardableResult
        public mutating func object(_ visit: (Key, inout Scanner) -> Void) -> Bool {
            guard take() else { return false }
            guard reader.peek() == UInt8(ascii: "{") else {
                skipTaken()
                return false
            }
            return members(depth: depth + 1, visit)
        }

        /// The members of the object at the cursor (its `{`), as ``Reader/object(depth:)``
        /// reads them; the cursor ends after its `}`.
        mutating func members(depth objectDepth: Int, _ visit: (Key, inout Scanner) -> Void) -> Bool {
            let outer = depth
            defer {
                depth = outer
                consumed = true
            }
            reader.i += 1  // {
            reader.skipWhitespace()
            if reader.peek() == UInt8(ascii: "}") {
                reader.i += 1
                return true
            }
            while true {
                reader.skipWhitespace()
                guard reader.peek() == UInt8(ascii: "\"") else { break }
                let key: Key
                if let raw = reader.plainKey() {
                    key = Key(raw: raw, decoded: nil)
                } else {
                    guard let decoded = reader.string() else { break }
                    key = Key(raw: UnsafeBufferPointer(start: nil, count: 0), decoded: decoded)
                }
                reader.skipWhitespace()
                guard reader.peek() == UInt8(ascii: ":") else { break }
                reader.i += 1
                reader.skipWhitespace()
                depth = objectDepth
                consumed = false
                visit(key, &self)
                depth = objectDepth
                if failed { return false }
                if !consumed {
                    consumed = true
                    guard reader.skip(depth: objectDepth) else { break }
                }
                guard let closed = reader.commaOrClose(UInt8(ascii: "}")) else { break }
                if closed { return true }
            }
            failed = true
            return false
        }
    }

    /// Scans `bytes` as one JSON object: `visit` is called with each top-level member in
    /// document order (a repeated name is visited each time, so assigning in the visit keeps the
    /// last, as ``parseObject(_:)`` does). `false` if the bytes are not exactly one valid JSON
    /// object, the same documents ``parseObject(_:)`` refuses; what the visits saw must then be
    /// discarded.
    public static func scanObject(_ bytes: UnsafeBufferPointer<UInt8>, _ visit: (Key, inout Scanner) -> Void) -> Bool {
        var scanner = Scanner(bytes: bytes)
        scanner.reader.skipWhitespace()
        guard scanner.reader.peek() == UInt8(ascii: "{"), scanner.members(depth: 1, visit) else { return false }
        scanner.reader.skipWhitespace()
        return scanner.reader.atEnd
    }

    /// ``scanObject(_:_:)-(UnsafeBufferPointer<UInt8>,_)`` over any byte collection.
    public static func scanObject(_ bytes: some Collection<UInt8>, _ visit: (Key, inout Scanner) -> Void) -> Bool {
        if let result = bytes.withContiguousStorageIfAvailable({ scanObject($0, visit) }) { return result }
        return Array(bytes).withUnsafeBufferPointer { scanObject($0, visit) }
    }
}
