import Foundation
import Crypto
import GatehouseCore
import SwiftASN1
import X509

/// Generates and loads the self-signed certificate `serve` uses when no `--tls-cert` is given.
public enum SelfSignedCertificate {
    /// Paths of a certificate and its private key (PEM).
    public struct Files: Sendable, Equatable {
        public var certificate: String
        public var privateKey: String
        public init(certificate: String, privateKey: String) {
            self.certificate = certificate
            self.privateKey = privateKey
        }
    }

    /// Creates an EC P-256 certificate for `localhost`, `127.0.0.1` and `::1` valid for a year,
    /// and writes it (0644) and its key (0600) to `files`.
    public static func generate(into files: Files, hostnames: [String] = []) throws {
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName {
            CommonName("Gatehouse self-signed")
            OrganizationName("Gatehouse")
        }
        var sans: [GeneralName] = [.dnsName("localhost"), .ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1])),
                                   .ipAddress(ASN1OctetString(contentBytes: ArraySlice([UInt8](repeating: 0, count: 15) + [1])))]
        for host in hostnames where host != "localhost" {
            if let ip = IPv4Bytes(host) {
                sans.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(ip))))
            } else if !host.contains(":") {
                sans.append(.dnsName(host))
            }
        }
        let now = Date()
        let certificate = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-300),
            notValidAfter: now.addingTimeInterval(365 * 24 * 3600),
            issuer: name,
            subject: name,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames(sans)
            },
            issuerPrivateKey: .init(key)
        )
        let certPEM = try certificate.serializeAsPEM().pemString
        let dir = (files.certificate as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try SecureFile.write(Data(key.pemRepresentation.utf8), to: files.privateKey, mode: 0o600)
        try SecureFile.write(Data((certPEM + "\n").utf8), to: files.certificate, mode: 0o644)
    }

    /// SHA-256 over the DER of the first certificate in a PEM file, as `AA:BB:…`.
    public static func fingerprint(ofPEMFile path: String) throws -> String {
        let pem = try String(contentsOfFile: path, encoding: .utf8)
        let document = try PEMDocument(pemString: pem)
        return SHA256.hash(data: document.derBytes).map { String(format: "%02X", $0) }.joined(separator: ":")
    }

    private static func IPv4Bytes(_ text: String) -> [UInt8]? {
        let parts = text.split(separator: ".")
        guard parts.count == 4 else { return nil }
        let bytes = parts.compactMap { UInt8($0) }
        return bytes.count == 4 ? bytes : nil
    }
}
