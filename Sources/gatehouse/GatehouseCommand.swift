import ArgumentParser
import Foundation
import GatehouseCore
import GatehouseServer
import Logging

/// `gatehouse`: the command line. Thin: parses flags and calls the library.
///
/// Exit codes: 0 ok, 1 usage error, 2 runtime error — each failure with one line on stderr.
@main
struct GatehouseCommand {
    static let configuration = CommandConfiguration(
        commandName: "gatehouse",
        abstract: "Gatehouse: a self-hosted LLM gateway that keeps provider credentials and traffic safe.",
        subcommands: [Serve.self, Init.self, VaultCommand.self, KeysCommand.self, OrgCommand.self, UsersCommand.self, AuditCommand.self]
    )

    static func main() async {
        // Every log line of every command goes through the redaction layer.
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = ProcessInfo.processInfo.environment["LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
            return RedactingLogHandler(handler)
        }
        let command: any ParsableCommand
        do {
            command = try Root.parseAsRoot()
        } catch {
            // --help and --version arrive here as "errors" with a success exit code.
            if Root.exitCode(for: error) == .success {
                Console.out(Root.fullMessage(for: error))
                exit(0)
            }
            let message = Root.message(for: error).split(separator: "\n").first.map(String.init) ?? "invalid usage"
            Console.err("Error: \(message) (see `gatehouse --help`)")
            exit(1)
        }
        do {
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                var syncCommand = command
                try syncCommand.run()
            }
            exit(0)
        } catch let code as ExitCode {
            exit(code.rawValue)
        } catch let error as ValidationError {
            Console.err("Error: \(error.message)")
            exit(1)
        } catch let error as GatehouseError {
            Console.err("gatehouse: \(Console.oneLine(error.description))")
            exit(2)
        } catch where Root.exitCode(for: error) == .success {
            // `gatehouse` alone, or a command group without a subcommand: show its help.
            Console.out(Root.fullMessage(for: error))
            exit(0)
        } catch where String(describing: type(of: error)).contains("CommandError") {
            Console.err("Error: \(Console.oneLine(Root.message(for: error))) (see `gatehouse --help`)")
            exit(1)
        } catch {
            Console.err("gatehouse: \(Console.oneLine(String(describing: error)))")
            exit(2)
        }
    }
}

/// The argument-parser root (kept separate from `@main`, whose `main` does the exit codes).
struct Root: AsyncParsableCommand {
    static let configuration = GatehouseCommand.configuration
}
