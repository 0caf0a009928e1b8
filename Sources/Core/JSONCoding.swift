/// A JSON value travels between ranks (inside a `Codable` value sent with `Collective.broadcast`
/// or `allgather`) as its own text, parsed again on arrival: object key order, exact 64-bit
/// integers and NaN/Infinity survive, which a keyed container would not keep.
extension JSON: Codable {
    package init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        do { self = try JSON.parse(try container.decode(String.self)) } catch let e as JSONError {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not a JSON document: \(e)")
        }
    }

    package func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(serialized())
    }
}
