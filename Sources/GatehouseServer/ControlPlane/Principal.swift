/// Who is acting, for authorization and for the audit trail.
public struct Principal: Sendable, Equatable {
    public enum Kind: String, Sendable {
        /// An organization API key (admin level).
        case apiKey = "api_key"
        /// A read-only organization key.
        case readKey = "read_key"
        /// The `gatehouse` command line, run by an OS user on the server machine.
        case cli
        /// Gatehouse itself (initialisation, background jobs).
        case system
    }

    public var kind: Kind
    /// Key id, OS user name, or `gatehouse`.
    public var id: String
    public var orgID: String
    public var clientIP: String

    public init(kind: Kind, id: String, orgID: String, clientIP: String = "") {
        self.kind = kind
        self.id = id
        self.orgID = orgID
        self.clientIP = clientIP
    }
}
