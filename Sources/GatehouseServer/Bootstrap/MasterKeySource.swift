import Foundation
import GatehouseCore

/// Where the master keyring comes from: `GATEHOUSE_MASTER_KEY`, or a key file
/// (default `~/.config/gatehouse/master.key`, mode 0600). Never the data directory.
public struct MasterKeySource: Sendable {
    /// The value of `GATEHOUSE_MASTER_KEY`, if set. Takes precedence over the file.
    public var environmentValue: String?
    public var filePath: String

    public init(environmentValue: String?, filePath: String) {
        self.environmentValue = environmentValue
        self.filePath = filePath
    }

    public static var defaultFilePath: String {
        let home = ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()
        return home + "/.config/gatehouse/master.key"
    }

    /// From the process environment, with an explicit file path if one was given.
    public static func fromEnvironment(filePath: String?) -> MasterKeySource {
        let env = ProcessInfo.processInfo.environment
        let value = env["GATEHOUSE_MASTER_KEY"].flatMap { $0.isEmpty ? nil : $0 }
        return MasterKeySource(
            environmentValue: value,
            filePath: filePath ?? env["GATEHOUSE_MASTER_KEY_FILE"] ?? defaultFilePath)
    }

    var describe: String { environmentValue != nil ? "GATEHOUSE_MASTER_KEY" : filePath }

    /// Loads the keyring; `nil` when neither the variable nor the file exists.
    public func load() throws -> MasterKeyring? {
        if let value = environmentValue {
            return try MasterKeyring.parse(value, source: "GATEHOUSE_MASTER_KEY")
        }
        guard let mode = SecureFile.mode(of: filePath) else { return nil }
        guard mode & 0o077 == 0 else { throw GatehouseError.vault(.masterKeyFileTooOpen(path: filePath)) }
        let text: String
        do {
            text = try String(contentsOfFile: filePath, encoding: .utf8)
        } catch {
            throw GatehouseError.vault(.masterKeyMalformed(source: filePath, reason: "cannot be read as UTF-8 text"))
        }
        return try MasterKeyring.parse(text, source: filePath)
    }

    /// Refuses a key file inside the data directory.
    public func checkOutside(dataDir: String) throws {
        guard environmentValue == nil else { return }
        let key = Self.resolved(filePath)
        let dir = Self.resolved(dataDir)
        if key == dir || key.hasPrefix(dir.hasSuffix("/") ? dir : dir + "/") {
            throw GatehouseError.masterKeyInsideDataDir(path: filePath)
        }
    }

    /// `path` with symlinks resolved, even when its last components do not exist yet: the
    /// deepest existing ancestor is resolved and the rest appended (so a link to the data
    /// directory cannot smuggle a new key file into it).
    static func resolved(_ path: String) -> String {
        var url = URL(fileURLWithPath: path).standardizedFileURL
        var rest: [String] = []
        while !FileManager.default.fileExists(atPath: url.path), url.path != "/" {
            rest.insert(url.lastPathComponent, at: 0)
            url.deleteLastPathComponent()
        }
        var resolved = url.resolvingSymlinksInPath()
        for component in rest { resolved.appendPathComponent(component) }
        return resolved.standardizedFileURL.path
    }

    /// Writes `keyring` to the key file (0600, parent 0700). Refused for an environment key,
    /// which Gatehouse cannot change for you.
    public func save(_ keyring: MasterKeyring) throws {
        guard environmentValue == nil else {
            throw GatehouseError.startup(
                "the master key comes from GATEHOUSE_MASTER_KEY, which gatehouse cannot rewrite; move it to a key file (--master-key-file) to rotate")
        }
        let dir = (filePath as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try SecureFile.write(Data(keyring.serialized().utf8), to: filePath, mode: 0o600)
    }
}
