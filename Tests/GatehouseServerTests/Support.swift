import Crypto
import Foundation
import GatehouseCore
import GatehouseServer
import GatehouseStore
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import Synchronization
import Testing

// MARK: - Temporary directories and installations

/// A logger that discards everything (the store logs migrations at info level).
let quietLogger = Logger(label: "gatehouse.tests", factory: { _ in SwiftLogNoOpLogHandler() })

/// Creates a fresh owner-only temporary directory, runs `body`, and removes the directory.
func withTemporaryDirectory<T>(_ body: (String) async throws -> T) async throws -> T {
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("gatehouse-server-tests-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    defer { try? FileManager.default.removeItem(at: url) }
    return try await body(url.standardizedFileURL.path)
}

/// The base64 text of 32 random bytes: a one-version master key.
func randomMasterKeyText() -> String {
    SymmetricKey(size: .bits256).withUnsafeBytes { Data($0) }.base64EncodedString()
}

/// An initialised installation in a temporary directory, with its control plane.
struct Gatehouse: Sendable {
    /// The temporary directory; the data directory is `root/data`.
    let root: String
    let paths: Installation.Paths
    let masterKey: MasterKeySource
    let plane: ControlPlane
    /// The owner API key of the default organization.
    let ownerKey: String

    var orgID: String {
        guard case .success(let record) = plane.keyTable.authenticate(ownerKey) else { return "" }
        return record.orgID
    }

    var ownerPrincipal: Principal {
        guard case .success(let record) = plane.keyTable.authenticate(ownerKey) else {
            return Principal(kind: .apiKey, id: "", orgID: "")
        }
        return Principal(kind: .apiKey, id: record.id, orgID: record.orgID)
    }

    /// Creates another organization and returns its owner key.
    func createOrganization(name: String = "second") async throws -> (Organization, String) {
        try await plane.createOrganization(name: name, by: Principal(kind: .system, id: "tests", orgID: ""))
    }
}

/// Runs `body` against a freshly initialised installation (master key from the environment
/// value), and always closes the store afterwards.
func withGatehouse<T>(_ body: (Gatehouse) async throws -> T) async throws -> T {
    try await withTemporaryDirectory { root in
        let paths = Installation.Paths(dataDir: root + "/data")
        let source = MasterKeySource(environmentValue: randomMasterKeyText(), filePath: "/nonexistent")
        let opened = try await Installation.open(paths: paths, masterKey: source, initialise: true, logger: quietLogger)
        let plane = opened.controlPlane
        do {
            let ownerKey = try #require(opened.ownerKey, "a new installation returns its owner key")
            let result = try await body(
                Gatehouse(root: root, paths: paths, masterKey: source, plane: plane, ownerKey: ownerKey))
            try await plane.store.close()
            return result
        } catch {
            try? await plane.store.close()
            throw error
        }
    }
}

// MARK: - Canaries

/// Every encoding of a secret that must never appear in a response or on disk: plain,
/// base64 / base64url at each alignment, hex, and percent-encoded.
func canaryForms(_ secret: String) -> [Data] {
    let value = Data(secret.utf8)
    var forms: [Data] = [value]
    for k in 0..<3 {
        let encoded = Array((Data(repeating: 0, count: k) + value).base64EncodedString().utf8.filter { $0 != UInt8(ascii: "=") })
        let start = (8 * k + 5) / 6
        let end = (8 * (k + value.count)) / 6
        guard start < end, end <= encoded.count else { continue }
        let core = Data(encoded[start..<end])
        forms.append(core)
        forms.append(Data(core.map { $0 == UInt8(ascii: "+") ? UInt8(ascii: "-") : $0 == UInt8(ascii: "/") ? UInt8(ascii: "_") : $0 }))
    }
    let hex = value.map { String(format: "%02x", $0) }.joined()
    forms.append(Data(hex.utf8))
    forms.append(Data(hex.uppercased().utf8))
    if let percent = secret.addingPercentEncoding(withAllowedCharacters: .alphanumerics) {
        forms.append(Data(percent.utf8))
    }
    return Array(Set(forms.filter { $0.count >= 12 }))
}

/// A provider secret shaped like the e2e suite's canaries: `sk-canary-` + 32 base62.
func newCanarySecret() -> String { "sk-canary-" + Base62.random(count: 32) }

// MARK: - HTTP client

/// Collects every response of a test and the secrets none of them may contain.
final class ResponseLog: Sendable {
    private let state = Mutex<(bodies: [String], canaries: [String])>(([], []))

    func addCanary(_ secret: String) {
        state.withLock {
            $0.canaries.append(secret)
            if secret.hasPrefix("sk-canary-") { $0.canaries.append(String(secret.dropFirst("sk-canary-".count))) }
        }
    }

    func record(_ body: String) { state.withLock { $0.bodies.append(body) } }

    var bodies: [String] { state.withLock { $0.bodies } }
    var canaries: [String] { state.withLock { $0.canaries } }
}

/// One response, decoded.
struct Reply: Sendable {
    let method: String
    let path: String
    let status: Int
    let headers: HTTPFields
    let text: String
    let json: JSONValue?

    var requestID: String? { headers[.requestID] }
    subscript(_ key: String) -> JSONValue? { json?[key] }
}

extension HTTPField.Name {
    static let requestID = Self("Gatehouse-Request-Id")!
}

/// How a request authenticates.
enum Auth: Sendable {
    case owner
    case none
    case key(String)
    /// A raw `Authorization` header value.
    case header(String)
}

/// A thin client over HummingbirdTesting that checks the invariants of every response: a
/// well-formed, unique `Gatehouse-Request-Id`, the error shape on every error, and no canary
/// secret in any body.
struct API: Sendable {
    let client: any TestClientProtocol
    let ownerKey: String
    let log: ResponseLog

    @discardableResult
    func call(
        _ method: HTTPRequest.Method, _ path: String, auth: Auth = .owner, json: JSONValue? = nil, raw: String? = nil,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> Reply {
        var headers = HTTPFields()
        switch auth {
        case .owner: headers[.authorization] = "Bearer \(ownerKey)"
        case .none: break
        case .key(let key): headers[.authorization] = "Bearer \(key)"
        case .header(let value): headers[.authorization] = value
        }
        var body: ByteBuffer? = nil
        if let json {
            headers[.contentType] = "application/json"
            body = ByteBuffer(bytes: json.encoded())
            if case .string(let secret)? = json["api_key"] { log.addCanary(secret) }
        } else if let raw {
            headers[.contentType] = "application/json"
            body = ByteBuffer(string: raw)
        }
        let response = try await client.execute(uri: path, method: method, headers: headers, body: body)
        let text = String(buffer: response.body)
        let decoded = try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
        let reply = Reply(
            method: method.rawValue, path: path, status: Int(response.status.code), headers: response.headers, text: text,
            json: decoded)
        log.record(text)
        checkInvariants(reply, sourceLocation: sourceLocation)
        return reply
    }

    private func checkInvariants(_ reply: Reply, sourceLocation: SourceLocation) {
        let what = "\(reply.method) \(reply.path) → \(reply.status)"
        if let id = reply.requestID {
            #expect(id.wholeMatch(of: #/req_[0-9A-Za-z]{20}/#) != nil, "\(what): request id \(id)", sourceLocation: sourceLocation)
        } else {
            Issue.record("\(what): no Gatehouse-Request-Id header", sourceLocation: sourceLocation)
        }
        if reply.status >= 400 { expectErrorShape(reply, sourceLocation: sourceLocation) }
        let bytes = Data(reply.text.utf8)
        for secret in log.canaries {
            for form in canaryForms(secret) where bytes.range(of: form) != nil {
                Issue.record("\(what): the response contains a provider secret", sourceLocation: sourceLocation)
            }
        }
    }

    // MARK: Conveniences

    /// Creates a provider key (secret registered as a canary) and returns its JSON and secret.
    func createProviderKey(
        name: String = "pk", provider: String = "openai", baseURL: String? = nil, auth: Auth = .owner,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> (JSONValue, String) {
        let secret = newCanarySecret()
        var body: [String: JSONValue] = ["name": .string(name), "provider": .string(provider), "api_key": .string(secret)]
        if let baseURL { body["base_url"] = .string(baseURL) }
        let reply = try await call(.post, "/api/provider-keys", auth: auth, json: .object(body), sourceLocation: sourceLocation)
        #expect(reply.status == 201, "\(reply.text)", sourceLocation: sourceLocation)
        return (try #require(reply.json, sourceLocation: sourceLocation), secret)
    }

    func createProxyKey(
        providerKeyID: String, name: String = "proxy", extra: [String: JSONValue] = [:], auth: Auth = .owner,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> JSONValue {
        var body: [String: JSONValue] = ["name": .string(name), "provider_key_id": .string(providerKeyID)]
        body.merge(extra) { _, new in new }
        let reply = try await call(.post, "/api/proxy-keys", auth: auth, json: .object(body), sourceLocation: sourceLocation)
        #expect(reply.status == 201, "\(reply.text)", sourceLocation: sourceLocation)
        return try #require(reply.json, sourceLocation: sourceLocation)
    }

    func createOrgKey(kind: String, name: String = "org-key", auth: Auth = .owner, sourceLocation: SourceLocation = #_sourceLocation)
        async throws -> JSONValue
    {
        let reply = try await call(
            .post, "/api/api-keys", auth: auth, json: ["name": .string(name), "kind": .string(kind)], sourceLocation: sourceLocation)
        #expect(reply.status == 201, "\(reply.text)", sourceLocation: sourceLocation)
        return try #require(reply.json, sourceLocation: sourceLocation)
    }
}

/// Checks `{"error":{"type","message","request_id"}}` with `request_id` equal to the header.
func expectErrorShape(_ reply: Reply, sourceLocation: SourceLocation = #_sourceLocation) {
    let what = "\(reply.method) \(reply.path) → \(reply.status)"
    guard let error = reply["error"]?.object else {
        Issue.record("\(what): error body is not {\"error\":{…}}: \(reply.text.prefix(300))", sourceLocation: sourceLocation)
        return
    }
    #expect(reply.json?.object?.keys.sorted() == ["error"], "\(what)", sourceLocation: sourceLocation)
    #expect(error.keys.sorted() == ["message", "request_id", "type"], "\(what): \(error.keys.sorted())", sourceLocation: sourceLocation)
    #expect(error["type"]?.string?.isEmpty == false, "\(what): no error type", sourceLocation: sourceLocation)
    #expect(error["message"]?.string?.isEmpty == false, "\(what): no error message", sourceLocation: sourceLocation)
    #expect(error["request_id"]?.string != nil, "\(what): no request_id", sourceLocation: sourceLocation)
    #expect(error["request_id"]?.string == reply.requestID, "\(what): request_id differs from the header", sourceLocation: sourceLocation)
    #expect(reply.headers[.contentType]?.hasPrefix("application/json") == true, "\(what)", sourceLocation: sourceLocation)
}

/// Checks status and error type (the shape is checked on every error already).
func expectError(_ reply: Reply, _ status: Int, _ type: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(reply.status == status, "\(reply.method) \(reply.path): \(reply.text.prefix(300))", sourceLocation: sourceLocation)
    #expect(reply["error"]?["type"]?.string == type, "\(reply.method) \(reply.path): \(reply.text.prefix(300))", sourceLocation: sourceLocation)
}

/// Runs `body` with an in-process client for the admin API of `gatehouse`.
func withAPI<T: Sendable>(_ gatehouse: Gatehouse, log: ResponseLog = ResponseLog(), _ body: @Sendable (API) async throws -> T)
    async throws -> T
{
    let app = Application(router: GatehouseApp.buildRouter(plane: gatehouse.plane), logger: quietLogger)
    return try await app.test(.router) { client in
        try await body(API(client: client, ownerKey: gatehouse.ownerKey, log: log))
    }
}

// MARK: - JSON conveniences

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByFloatLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .number(Double(value)) }
    public init(floatLiteral value: Double) { self = .number(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }

    subscript(_ key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    var object: [String: JSONValue]? {
        if case .object(let o) = self { return o }
        return nil
    }

    var string: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    var number: Double? {
        if case .number(let n) = self { return n }
        return nil
    }

    var array: [JSONValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    var isNull: Bool { self == .null }
}

extension Reply {
    /// The ids of a `{"data":[…]}` list.
    var listedIDs: [String] { (self["data"]?.array ?? []).compactMap { $0["id"]?.string } }
    var listed: [String: JSONValue] {
        Dictionary((self["data"]?.array ?? []).compactMap { o in o["id"]?.string.map { ($0, o) } }, uniquingKeysWith: { a, _ in a })
    }
}

/// An ISO 8601 timestamp `seconds` from now.
func isoDate(in seconds: TimeInterval) -> String { Date().addingTimeInterval(seconds).formatted(.iso8601) }
