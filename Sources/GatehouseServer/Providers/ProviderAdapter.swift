import GatehouseCore

/// What differs between providers: how the provider key is presented, which dialect the
/// responses are in, and headers a provider needs.
struct ProviderAdapter: Sendable {
    let provider: Provider

    var dialect: UsageDialect { provider == .anthropic ? .anthropic : .openai }

    /// The headers that carry the provider key.
    func authHeaders(secret: String) -> [(String, String)] {
        switch provider {
        case .openai, .openaiCompatible: [("Authorization", "Bearer " + secret)]
        case .anthropic: [("x-api-key", secret)]
        }
    }

    /// Headers added when the client did not send them.
    func defaultHeaders(present: (String) -> Bool) -> [(String, String)] {
        if provider == .anthropic, !present("anthropic-version") {
            return [("anthropic-version", "2023-06-01")]
        }
        return []
    }

    /// Whether the gateway should ask for usage in an OpenAI stream (the client's request is
    /// patched and the extra usage chunk is hidden from it if it did not ask itself).
    func wantsIncludeUsage(path: String, info: RequestBodyInfo) -> Bool {
        provider != .anthropic && info.stream && !info.hasStreamOptions
            && (path.hasSuffix("/chat/completions") || path.hasSuffix("/completions"))
    }
}
