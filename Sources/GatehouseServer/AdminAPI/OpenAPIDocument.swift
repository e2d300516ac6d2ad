/// The OpenAPI description of the admin API, served at `GET /api/openapi.yaml`.
///
/// The source of truth is `openapi.yaml` at the repository root; `Scripts/embed-openapi`
/// copies it into ``OpenAPIDocument/text`` (a test fails when the two differ), so the binary
/// needs no resource bundle next to it.
enum OpenAPIDocument {
    static var text: String { openAPIYAML + "\n" }
}
