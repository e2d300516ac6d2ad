import HTTPTypes
import Testing
@Test func scratch() async throws {
    try await withGatehouse { g in
        try await withAPI(g) { api in
            let r = try await api.call(.get, "/api/provider-keys")
            print(r.status, r.text, r.headers)
        }
    }
}
