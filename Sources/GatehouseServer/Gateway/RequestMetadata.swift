/// Helicone-compatible request metadata headers.
struct RequestMetadata: Sendable {
    var userID: String?
    var sessionID: String?
    var properties: [String: String] = [:]
    var omitRequest = false
    var omitResponse = false

    static let maxValueLength = 512
    static let maxProperties = 50

    init() {}

    /// One `Helicone-*` field (`name` lowercased), as ``ClientHeaders`` meets it.
    mutating func read(lowercasedName name: String, value: String) {
        let value = String(value.prefix(Self.maxValueLength))
        switch name {
        case "helicone-user-id": userID = value
        case "helicone-session-id": sessionID = value
        case "helicone-omit-request": omitRequest = value.lowercased() == "true"
        case "helicone-omit-response": omitResponse = value.lowercased() == "true"
        default:
            if name.hasPrefix("helicone-property-"), properties.count < Self.maxProperties {
                let key = String(name.dropFirst("helicone-property-".count).prefix(100))
                if !key.isEmpty { properties[key] = value }
            }
        }
    }
}
