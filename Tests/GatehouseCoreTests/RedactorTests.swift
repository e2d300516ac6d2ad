import Foundation
import GatehouseCore
import Testing

/// The one redaction layer: secrets out of free text by pattern and by (registered) value,
/// ordinary text untouched.
@Suite("Redactor")
struct RedactorTests {
    @Test func gatehouseKeysKeepOnlyTheirPublicPrefixAndID() {
        let key = GatehouseKey.generate(kind: .proxy).text
        let out = Redactor().redact("key \(key) was refused")
        #expect(!out.contains(key))
        #expect(out.contains(String(key.prefix("gate_proxy_".count + 12)) + Redactor.marker))
        #expect(out.hasPrefix("key ") && out.hasSuffix(" was refused"))
    }

    @Test(arguments: [
        "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
        "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_x",
        "sk-AbCdEfGhIjKlMnOpQrStUvWx",
        "AKIAIOSFODNN7EXAMPLE",
        "AIzaSyA1234567890abcdefghijklmnopqrstuv",
    ])
    func providerKeysByPattern(_ secret: String) {
        let out = Redactor().redact("upstream said: invalid key \(secret), try again")
        #expect(!out.contains(secret), "\(out)")
        #expect(out.contains(Redactor.marker))
        #expect(out.hasSuffix(", try again"))
    }

    @Test(arguments: ["Authorization: Bearer abc.def-ghi_jkl+mno/pq=", "authorization: basic dXNlcjpwYXNzd29yZA==", "x-api-key: 0123456789abcdef"])
    func credentialsAfterTheirLabel(_ line: String) {
        let value = String(line.split(separator: " ").last!)
        let out = Redactor().redact(line)
        #expect(!out.contains(value), "\(out)")
        #expect(out.lowercased().contains(Redactor.marker))
    }

    @Test func registeredValuesAreRemovedWhateverTheirShape() {
        let redactor = Redactor()
        let odd = "zz" + UUID().uuidString.replacingOccurrences(of: "-", with: "") + "Q"  // matches no pattern
        #expect(redactor.redact("value=\(odd);") == "value=\(odd);", "not registered yet: untouched")
        redactor.register(odd)
        #expect(redactor.redact("value=\(odd);") == "value=\(Redactor.marker);")
        #expect(redactor.redact("\(odd)") == Redactor.marker)
        #expect(redactor.redact("a \(odd) b \(odd) c") == "a \(Redactor.marker) b \(Redactor.marker) c")
        // Part of a longer token is not the secret.
        #expect(redactor.redact("x\(odd)") == "x\(odd)")
    }

    @Test func registeredBase64MasterKeyIsRemoved() {
        let redactor = Redactor()
        let b64 = Data((0..<32).map { UInt8(($0 * 37 + 11) & 0xFF) }).base64EncodedString()
        redactor.register(b64)
        let out = redactor.redact("keyring line 1:\(b64)\n")
        #expect(out == "keyring line 1:\(Redactor.marker)\n")
    }

    @Test func shortValuesAreNotRegistered() {
        let redactor = Redactor()
        redactor.register("short")
        #expect(redactor.registeredCount == 0)
        #expect(redactor.redact("a short text") == "a short text")
    }

    @Test(arguments: [
        "GET /api/provider-keys/pk_0123456789abcdef returned 404",
        "skipped 3 keys; task-runner finished",
        "ordinary text with gate_ in it, and gate_api_short",
        "ümlaut and emoji 🔑 stay intact",
        "",
    ])
    func ordinaryTextIsUntouched(_ text: String) {
        #expect(Redactor().redact(text) == text)
    }

    @Test func theSharedRedactorKnowsTheMasterKeysItParsed() throws {
        let b64 = Data((0..<32).map { UInt8(($0 * 53 + 7) & 0xFF) }).base64EncodedString()
        _ = try MasterKeyring.parse("1:\(b64)\n", source: "test")
        #expect(Redactor.shared.redact("leak \(b64)") == "leak \(Redactor.marker)")
    }

    @Test func aKnownSecretIsRemovedFromAnyBytes() {
        let secret = Array("sk-live-0123456789".utf8)
        let body = Array(#"{"message":"bad key sk-live-0123456789, ""#.utf8) + [0xFF, 0x00] + secret + Array("x\"}".utf8)
        let out = Redactor.removing(secret, from: body)
        #expect(out == Array(#"{"message":"bad key [redacted], ""#.utf8) + [0xFF, 0x00] + Array("[redacted]x\"}".utf8))
        #expect(Redactor.removing(secret, from: Array("nothing here".utf8)) == Array("nothing here".utf8))
        #expect(Redactor.removing(Array("short".utf8), from: Array("a short body".utf8)) == Array("a short body".utf8), "secrets under 8 bytes are never matched")
    }
}
