import Foundation
import GatehouseCore
import NIOCore

/// What the gateway needs from a client's JSON body, read in one pass; the original bytes
/// are forwarded untouched unless a field must be added (then they are patched, not re-encoded).
struct RequestBodyInfo: Sendable {
    var model: String?
    var stream = false
    /// `stream_options` present at all.
    var hasStreamOptions = false
    var includeUsage = false
    var user: String?
    var maxTokens: Int?

    /// Parses `body` if it is a JSON object; `nil` for an empty body. Throws for invalid JSON
    /// when the client said it is sending JSON. One scan, nothing built but the members read
    /// (the rest of the body, `messages` and all, is validated and skipped); a repeated member
    /// counts as its last occurrence.
    static func parse(_ body: ByteBuffer, contentType: String?, maxDepth: Int = GatewayLimits.maxJSONDepth) throws(GatewayError) -> RequestBodyInfo? {
        guard body.readableBytes > 0 else { return nil }
        // Declared JSON must be JSON. Undeclared bodies (curl's default form type) are read as
        // JSON when they look like an object, and otherwise passed through unread.
        let declaredJSON = contentType.map(mentionsJSON) ?? false
        let firstByte = body.readableBytesView.first(where: { !($0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09) })
        guard declaredJSON || firstByte == UInt8(ascii: "{") else { return nil }
        guard jsonNestingDepth(body.readableBytesView) <= maxDepth else {
            throw .badJSON("nested too deeply")
        }
        var info = RequestBodyInfo()
        var maxTokens: Int?
        var maxCompletionTokens: Int?
        var maxOutputTokens: Int?
        let valid = body.withUnsafeReadableBytes { raw in
            MiniJSON.scanObject(raw.assumingMemoryBound(to: UInt8.self)) { key, value in
                if key.is("model") {
                    info.model = value.string()
                } else if key.is("stream") {
                    info.stream = value.bool() ?? false
                } else if key.is("stream_options") {
                    info.hasStreamOptions = true
                    var includeUsage: Bool? = nil
                    value.object { key, value in
                        if key.is("include_usage") { includeUsage = value.bool() }
                    }
                    info.includeUsage = includeUsage ?? false
                } else if key.is("user") {
                    info.user = value.string()
                } else if key.is("max_tokens") {
                    maxTokens = value.int()
                } else if key.is("max_completion_tokens") {
                    maxCompletionTokens = value.int()
                } else if key.is("max_output_tokens") {
                    maxOutputTokens = value.int()
                }
            }
        }
        guard valid else {
            if !declaredJSON { return nil }
            throw .badJSON("expected a JSON object")
        }
        info.maxTokens = maxTokens ?? maxCompletionTokens ?? maxOutputTokens
        return info
    }

    /// `json` anywhere in a content type, in any case (`application/json`, `…+json`).
    static func mentionsJSON(_ contentType: String) -> Bool {
        let bytes = Array(contentType.utf8)
        guard bytes.count >= 4 else { return false }
        for i in 0...(bytes.count - 4)
        where bytes[i] | 0x20 == UInt8(ascii: "j") && bytes[i + 1] | 0x20 == UInt8(ascii: "s")
            && bytes[i + 2] | 0x20 == UInt8(ascii: "o") && bytes[i + 3] | 0x20 == UInt8(ascii: "n")
        {
            return true
        }
        return false
    }

    /// Adds `"stream_options":{"include_usage":true}` right after the opening brace, leaving
    /// every other byte as the client sent it.
    static func addingIncludeUsage(to body: ByteBuffer) -> ByteBuffer {
        let bytes = body.readableBytesView
        guard let brace = bytes.firstIndex(of: UInt8(ascii: "{")) else { return body }
        var out = ByteBuffer()
        out.reserveCapacity(body.readableBytes + 48)
        out.writeBytes(bytes[bytes.startIndex...brace])
        out.writeString(#""stream_options":{"include_usage":true}"#)
        // A comma only if the object is not empty.
        let rest = bytes[(brace + 1)...]
        if let next = rest.first(where: { !($0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09) }), next != UInt8(ascii: "}") {
            out.writeString(",")
        }
        out.writeBytes(rest)
        return out
    }
}

/// Bounds on gateway input.
public enum GatewayLimits {
    public static let maxBodyBytes = 32 * 1024 * 1024
    public static let maxJSONDepth = 64
    /// How much of a response body is kept for the request log (and for usage parsing of
    /// non-streaming responses).
    public static let maxCapturedResponseBytes = 4 * 1024 * 1024
}
