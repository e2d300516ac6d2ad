import Foundation
import Testing

@testable import GatehouseServer

/// The served OpenAPI document is the repository's `openapi.yaml`, byte for byte
/// (regenerate with `Scripts/embed-openapi` after editing the YAML).
@Test func servedOpenAPIDocumentMatchesRepositoryFile() throws {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let file = try String(contentsOf: root.appendingPathComponent("openapi.yaml"), encoding: .utf8)
    #expect(OpenAPIDocument.text == file)
}
