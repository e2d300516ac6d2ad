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
    ///
    /// Uses `JSONSerialization` (one pass, no thrown errors on the way) rather than a
    /// `Decodable` enum, whose failed `try?` attempts per value cost more than the parse.
    public static func parseObject(_ bytes: some Collection<UInt8>) -> [String: Value]? {
        guard !bytes.isEmpty else { return nil }
        guard let any = try? JSONSerialization.jsonObject(with: Data(bytes), options: []),
            let dict = any as? [String: Any]
        else { return nil }
        return dict.mapValues(convert)
    }

    static func convert(_ any: Any) -> Value {
        switch any {
        case let s as String: return .string(s)
        case let n as NSNumber:
            // JSON booleans arrive as NSNumber too; their type encoding is `c`, which a JSON
            // number never has.
            if String(cString: n.objCType) == "c" { return .bool(n.boolValue) }
            return .number(n.doubleValue)
        case let a as [Any]: return .array(a.map(convert))
        case let d as [String: Any]: return .object(d.mapValues(convert))
        default: return .null
        }
    }
}
