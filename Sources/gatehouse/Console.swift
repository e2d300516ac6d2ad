import Foundation
import GatehouseCore

/// Unbuffered output: a line printed before a long-running server starts must reach a pipe
/// immediately (stdout to a pipe is otherwise block-buffered).
enum Console {
    static func out(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }

    /// Error output: through the redaction layer (an error may quote its input).
    static func err(_ line: String) {
        FileHandle.standardError.write(Data((Redactor.shared.redact(line) + "\n").utf8))
    }

    static func oneLine(_ text: String) -> String {
        text.split(whereSeparator: \.isNewline).joined(separator: " ")
    }
}
