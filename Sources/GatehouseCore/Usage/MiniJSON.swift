import Foundation

/// A thin typed view over Foundation's `JSONSerialization`, for reading a few fields out of
/// provider payloads without declaring `Decodable` types for every shape.
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

    /// Parses a JSON object; `nil` for anything else or invalid JSON.
    public static func parseObject(_ bytes: some Collection<UInt8>) -> [String: Value]? {
        guard !bytes.isEmpty else { return nil }
        guard case .object(let o)? = try? JSONDecoder().decode(Value.self, from: Data(bytes)) else { return nil }
        return o
    }
}

extension MiniJSON.Value: Decodable {
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let n = try? c.decode(Double.self) {
            self = .number(n)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([MiniJSON.Value].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: MiniJSON.Value].self))
        }
    }
}
