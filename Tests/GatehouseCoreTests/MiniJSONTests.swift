import Foundation
import GatehouseCore
import Testing

/// The gateway's JSON reader: strict RFC 8259, agrees with Foundation's parser on what is
/// valid and on the values, bounded depth, never traps.
@Suite("MiniJSON")
struct MiniJSONTests {
    static let valid: [String] = [
        #"{}"#, #"{"a":1}"#, #" { "a" : [ 1 , 2.5 , -3e2 , true , false , null , "x" ] } "#,
        #"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":false},"max_tokens":256}"#,
        #"{"s":"esc \" \\ \/ \b \f \n \r \t \u00e9 \ud83d\ude00 end"}"#,
        #"{"n":0,"m":-0,"f":0.5,"e":1E+2,"big":12345678901234567890,"neg":-9007199254740993}"#,
        #"{"nested":{"a":{"b":{"c":[[[]]]}}}}"#, #"{"dup":1,"dup":2}"#, "{\"ü\":\"ünïcödé ✓\"}",
        #"{"usage":{"prompt_tokens":1200,"completion_tokens":300,"total_tokens":1500}}"#,
    ]
    static let invalid: [String] = [
        "", " ", "[]", "1", "\"s\"", "{", "}", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "{,}", "{\"a\":1 \"b\":2}",
        "{\"a\":01}", "{\"a\":1.}", "{\"a\":.5}", "{\"a\":1e}", "{\"a\":+1}", "{\"a\":-}", "{\"a\":tru}",
        "{\"a\":nul}", "{\"a\":\"unterminated}", "{\"a\":\"bad \\x escape\"}", "{\"a\":\"\\u12\"}",
        "{\"a\":\"\\ud800\"}", "{\"a\":\"\\udc00\"}", "{\"a\":\"tab\there\"}", "{'a':1}", "{a:1}",
        "{\"a\":1}}", "{\"a\":1} x", "{\"a\":[1,2}", "{\"a\":NaN}", "{\"a\":Infinity}", "// c\n{}",
    ]

    static func foundation(_ text: String) -> Any? {
        try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [])
    }

    @Test(arguments: valid)
    func acceptsValidObjects(_ text: String) throws {
        let object = try #require(MiniJSON.parseObject(Array(text.utf8)), "refused valid JSON: \(text)")
        let reference = try #require(Self.foundation(text) as? [String: Any])
        #expect(Set(object.keys) == Set(reference.keys))
    }

    @Test(arguments: invalid)
    func refusesInvalidInput(_ text: String) {
        #expect(MiniJSON.parseObject(Array(text.utf8)) == nil, "accepted: \(text)")
    }

    @Test func invalidUTF8IsRefused() {
        let bytes: [UInt8] = Array(#"{"a":""#.utf8) + [0xC3, 0x28] + Array(#""}"#.utf8)
        #expect(MiniJSON.parseObject(bytes) == nil)
    }

    @Test func valuesMatchWhatWasWritten() throws {
        let o = try #require(MiniJSON.parseObject(Array(Self.valid[4].utf8)))
        #expect(o["s"]?.string == "esc \" \\ / \u{08} \u{0C} \n \r \t é 😀 end")
        let n = try #require(MiniJSON.parseObject(Array(Self.valid[5].utf8)))
        #expect(n["n"]?.int == 0)
        #expect(n["f"] == .number(0.5))
        #expect(n["e"]?.int == 100)
        #expect(n["big"] == .number(Double("12345678901234567890")!))
        #expect(n["big"]?.int == nil, "beyond exact integers")
        let r = try #require(MiniJSON.parseObject(Array(Self.valid[3].utf8)))
        #expect(r["model"]?.string == "gpt-4o-mini")
        #expect(r["stream"]?.bool == true)
        #expect(r["max_tokens"]?.int == 256)
        if case .object(let options)? = r["stream_options"] {
            #expect(options["include_usage"]?.bool == false)
        } else {
            Issue.record("stream_options is not an object")
        }
        #expect(try #require(MiniJSON.parseObject(Array(Self.valid[7].utf8)))["dup"]?.int == 2, "the last duplicate wins")
    }

    @Test func depthIsBoundedWithoutTrapping() {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        #expect(MiniJSON.parseObject(Array(("{\"a\":" + deep + "}").utf8)) == nil)
        let ok = String(repeating: "[", count: 200) + String(repeating: "]", count: 200)
        #expect(MiniJSON.parseObject(Array(("{\"a\":" + ok + "}").utf8)) != nil)
    }

    @Test func agreesWithFoundationOnRandomDocuments() throws {
        // Documents written by Foundation's encoder from random values: both parsers must read
        // the same numbers, strings and shapes.
        var rng = SystemRandomNumberGenerator()
        func randomValue(_ depth: Int) -> Any {
            switch Int.random(in: 0..<(depth > 3 ? 4 : 6), using: &rng) {
            case 0: return Int.random(in: -1_000_000...1_000_000, using: &rng)
            case 1: return Double.random(in: -1e6...1e6, using: &rng)
            case 2: return String((0..<Int.random(in: 0..<12, using: &rng)).map { _ in "aé\"\\\n😀x/".randomElement(using: &rng)! })
            case 3: return Bool.random(using: &rng)
            case 4: return (0..<Int.random(in: 0..<4, using: &rng)).map { _ in randomValue(depth + 1) }
            default: return Dictionary(uniqueKeysWithValues: (0..<Int.random(in: 0..<4, using: &rng)).map { ("k\($0)", randomValue(depth + 1)) })
            }
        }
        func same(_ v: MiniJSON.Value, _ a: Any) -> Bool {
            switch (v, a) {
            case (.string(let s), let t as String): return s == t
            case (.bool(let b), let n as NSNumber) where String(cString: n.objCType) == "c": return b == n.boolValue
            case (.number(let d), let n as NSNumber): return d == n.doubleValue || abs(d - n.doubleValue) <= 1e-9 * abs(d)
            case (.array(let xs), let ys as [Any]): return xs.count == ys.count && zip(xs, ys).allSatisfy { same($0, $1) }
            case (.object(let xs), let ys as [String: Any]): return xs.count == ys.count && xs.allSatisfy { k, x in ys[k].map { same(x, $0) } ?? false }
            default: return false
            }
        }
        for _ in 0..<300 {
            let document: [String: Any] = ["root": randomValue(0)]
            let data = try JSONSerialization.data(withJSONObject: document, options: [])
            let mine = try #require(MiniJSON.parseObject(Array(data)), "refused \(String(decoding: data, as: UTF8.self))")
            let theirs = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
            #expect(same(.object(mine), theirs), "differs on \(String(decoding: data, as: UTF8.self))")
            #expect(MiniJSON.parseObject(Array(data), keeping: ["root"]) == mine)
            #expect(MiniJSON.parseObject(Array(data), keeping: ["other"]) == [:], "skipping refused a valid document")
        }
    }

    /// Keeping some top-level members accepts exactly the documents the full parse accepts and
    /// yields exactly its values for those members.
    @Test func keepingAgreesWithTheFullParse() throws {
        func check(_ bytes: [UInt8], keys: Set<String>) {
            let full = MiniJSON.parseObject(bytes)
            let kept = MiniJSON.parseObject(bytes, keeping: keys)
            #expect(kept == full.map { $0.filter { keys.contains($0.key) } }, "differs on \(String(decoding: bytes, as: UTF8.self))")
        }
        let inputs = (Self.valid + Self.invalid).map { Array($0.utf8) } + [
            Array(#"{"a":""#.utf8) + [0xC3, 0x28] + Array(#""}"#.utf8),  // invalid UTF-8 in a skipped string
            Array(#"{"skip":["#.utf8) + Array(#""\ud800\u0041""#.utf8) + Array("]}".utf8),  // lone surrogate, skipped
            Array(#"{"skip":{"k":[1,{"x":"\u00e9\ud83d\ude00"}]},"model":"m"}"#.utf8),
            // Top-level keys: escaped spellings of kept names, non-ASCII, empty, duplicated,
            // invalid UTF-8 and control characters (the byte comparison must agree with decoding).
            Array(#"{"mod\u0065l":"x","a":1,"\u0061":2}"#.utf8),
            Array(#"{"\u00e9":1,"é":2,"a\"b":3,"":4,"a":5,"a":6}"#.utf8),
            Array(#"{"x":1,""#.utf8) + [0xC3, 0x28] + Array(#"":2}"#.utf8),
            Array(#"{"x":1,"a"#.utf8) + [0x01] + Array(#"":2}"#.utf8),
            Array(#"{"model\/":1,"model ":2,"Model":3,"mode":4,"models":5,"modex":6,"model":7,"usagf":8,"modeL":9}"#.utf8),
        ]
        for input in inputs {
            for keys: Set<String> in [[], ["a"], ["model", "usage"], ["s", "n", "nested", "dup"], ["", "é", "a\"b"]] {
                check(input, keys: keys)
            }
        }
        // Random prefixes of valid documents are mostly invalid: both parsers must agree.
        for text in Self.valid {
            let bytes = Array(text.utf8)
            for cut in 0..<bytes.count { check(Array(bytes[..<cut]), keys: ["a", "model"]) }
        }
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        check(Array(("{\"skip\":" + deep + "}").utf8), keys: ["a"])
        let ok = String(repeating: "[", count: 200) + String(repeating: "]", count: 200)
        #expect(MiniJSON.parseObject(Array(("{\"skip\":" + ok + ",\"a\":1}").utf8), keeping: ["a"]) == ["a": .number(1)])
    }
    /// The scanner accepts exactly the documents the full parse accepts, and each of its
    /// readers answers what the parsed value says: the string, whole number, bool, array length
    /// or members of the value, `nil` for a value of another type. Every input is scanned once
    /// per reader, that reader used for every member (objects recursively), and compared with
    /// the tree, the last of a repeated member counting as in the parsed dictionary.
    @Test func scannerAgreesWithTheFullParse() throws {
        /// `typed`: the reader the parsed value's type calls for (objects recursively).
        enum Read: CaseIterable { case string, int, bool, arrayCount, object, skip, typed }
        indirect enum Seen: Equatable {
            case string(String?), int(Int?), bool(Bool?), arrayCount(Int?), object([String: Seen]?), skipped
        }
        func expected(_ value: MiniJSON.Value, _ read: Read) -> Seen {
            switch read {
            case .string: return .string(value.string)
            case .int: return .int(value.int)
            case .bool: return .bool(value.bool)
            case .arrayCount:
                if case .array(let a) = value { return .arrayCount(a.count) }
                return .arrayCount(nil)
            case .object:
                if case .object(let o) = value { return .object(o.mapValues { expected($0, read) }) }
                return .object(nil)
            case .skip: return .skipped
            case .typed:
                if case .object(let o) = value { return .object(o.mapValues { expected($0, .typed) }) }
                return expected(value, typed(value))
            }
        }
        func typed(_ value: MiniJSON.Value?) -> Read {
            switch value {
            case .string?: return .string
            case .number?: return .int
            case .bool?: return .bool
            case .array?: return .arrayCount
            case .object?: return .typed
            case .null?, nil: return .skip
            }
        }
        func scan(_ value: inout MiniJSON.Scanner, _ read: Read, guide: MiniJSON.Value? = nil) -> Seen {
            switch read {
            case .string: return .string(value.string())
            case .int: return .int(value.int())
            case .bool: return .bool(value.bool())
            case .arrayCount: return .arrayCount(value.arrayCount())
            case .object:
                var members: [String: Seen] = [:]
                let isObject = value.object { key, value in members[key.text] = scan(&value, read) }
                return .object(isObject ? members : nil)
            case .skip: return .skipped
            case .typed:
                guard case .object(let children)? = guide else { return scan(&value, typed(guide)) }
                var members: [String: Seen] = [:]
                let isObject = value.object { key, value in
                    let child = children[key.text]
                    let read = typed(child)
                    members[key.text] = read == .typed ? scan(&value, .typed, guide: child) : scan(&value, read)
                }
                return .object(isObject ? members : nil)
            }
        }
        func check(_ bytes: [UInt8]) {
            let tree = MiniJSON.parseObject(bytes)
            for read in Read.allCases {
                var members: [String: Seen] = [:]
                let valid = MiniJSON.scanObject(bytes) { key, value in
                    let child = tree?[key.text]
                    members[key.text] = read == .typed ? scan(&value, typed(child) == .typed ? .typed : typed(child), guide: child) : scan(&value, read)
                }
                #expect(valid == (tree != nil), "validity differs (\(read)) on \(String(decoding: bytes, as: UTF8.self))")
                if let tree, valid {
                    #expect(members == tree.mapValues { expected($0, read) }, "\(read) differs on \(String(decoding: bytes, as: UTF8.self))")
                }
            }
        }
        var inputs = (Self.valid + Self.invalid).map { Array($0.utf8) } + [
            Array(#"{"a":""#.utf8) + [0xC3, 0x28] + Array(#""}"#.utf8),
            Array(#"{"skip":["#.utf8) + Array(#""\ud800\u0041""#.utf8) + Array("]}".utf8),
            Array(#"{"mod\u0065l":"x","a":1,"\u0061":2,"a":[1,{"b":null}],"b":{"c":[[]],"c":"s"}}"#.utf8),
            Array(#"{"x":1,""#.utf8) + [0xC3, 0x28] + Array(#"":2}"#.utf8),
            Array(#"{"n":[1,2.5,-0,1e3,true,null,"s",{}],"i":9007199254740993,"f":1.5,"t":true,"z":null}"#.utf8),
        ]
        for text in Self.valid {
            let bytes = Array(text.utf8)
            for cut in 0..<bytes.count { inputs.append(Array(bytes[..<cut])) }
        }
        inputs.append(Array(("{\"a\":" + String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000) + "}").utf8))
        // Nesting at and past the limit: skipped by every reader but `object` and `typed`,
        // which descend (`scannerStopsAtTheDepthLimit` reads at the limit itself).
        for n in [MiniJSON.maxDepth - 2, MiniJSON.maxDepth - 1, MiniJSON.maxDepth] {
            inputs.append(Array(("{\"a\":" + String(repeating: "[", count: n) + String(repeating: "]", count: n) + "}").utf8))
        }
        for input in inputs { check(input) }
    }

    /// A value read at the nesting limit is refused as the full parse refuses it, whichever
    /// reader reads it.
    @Test func scannerStopsAtTheDepthLimit() {
        for n in (MiniJSON.maxDepth - 3)...(MiniJSON.maxDepth + 1) {
            let text = "{" + String(repeating: "\"b\":{", count: n) + "\"x\":1" + String(repeating: "}", count: n) + "}"
            let parses = MiniJSON.parseObject(Array(text.utf8)) != nil
            for leaf in 0..<4 {
                var read: Any? = nil
                func visit(_ key: MiniJSON.Key, _ value: inout MiniJSON.Scanner) {
                    if key.is("b") {
                        value.object(visit)
                    } else {
                        switch leaf {
                        case 0: read = value.int()
                        case 1: read = value.string()
                        case 2: read = value.bool()
                        default: read = value.arrayCount()
                        }
                    }
                }
                let valid = MiniJSON.scanObject(Array(text.utf8), visit)
                #expect(valid == parses, "depth \(n), reader \(leaf)")
                if valid, leaf == 0 { #expect(read as? Int == 1) }
            }
        }
    }
}
