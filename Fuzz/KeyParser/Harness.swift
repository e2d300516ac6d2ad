// libFuzzer entry point for the KeyParser target; the oracles are in
// Tests/GatehouseCoreTests/FuzzOracles/KeyParserOracle.swift (shared with the corpus replay test).
// Built and run by Scripts/fuzz; see Fuzz/README.md.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    do {
        try KeyParserOracle.run(bytes)
    } catch {
        fatalError("oracle failure: \(error)")
    }
    return 0
}
