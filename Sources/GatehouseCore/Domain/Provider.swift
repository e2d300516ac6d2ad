/// An upstream LLM provider kind.
public enum Provider: String, Sendable, Codable, CaseIterable {
    case openai
    case anthropic
    /// Any server that speaks the OpenAI API (vLLM, Ollama, ...); its base URL is required.
    case openaiCompatible = "openai-compatible"

    /// The base URL used when the stored provider key names none.
    public var defaultBaseURL: String? {
        switch self {
        case .openai: "https://api.openai.com"
        case .anthropic: "https://api.anthropic.com"
        case .openaiCompatible: nil
        }
    }
}
