package dlq

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/microchannels/channels/broker"
)

// Payload formats of FormatPayload.
const (
	FormatJSON    = "JSON"
	FormatMsgPack = "MsgPack"
	FormatText    = "text"
	FormatBinary  = "binary"
)

// DefaultShowLimit is the number of payload bytes FormatPayload decodes
// when given a limit of 0.
const DefaultShowLimit = 64 << 10

// FormatPayload renders a payload for people: indented JSON when it is
// JSON, MessagePack decoded and shown as indented JSON when it is a
// MessagePack map or array, else a quoted string when it is UTF-8 text,
// else a hex dump. It returns the format it recognised.
//
// Payloads are untrusted: only the first limit bytes (DefaultShowLimit
// when limit <= 0) are looked at, a longer payload is shown as text or hex
// of those bytes with a note of its size, and decoding uses the bounded
// decoders of package broker.
func FormatPayload(p []byte, limit int) (format, text string) {
	if limit <= 0 {
		limit = DefaultShowLimit
	}
	cut := ""
	if len(p) > limit {
		cut = fmt.Sprintf("\n… %d bytes in all, the first %d shown", len(p), limit)
		p = p[:limit]
	} else {
		if json.Valid(p) {
			var b bytes.Buffer
			if json.Indent(&b, p, "", "  ") == nil {
				return FormatJSON, b.String()
			}
		}
		if len(p) > 0 && isMsgPackContainer(p[0]) {
			var v any
			if err := (broker.MsgPack{}).Unmarshal(p, &v); err == nil {
				if b, err := json.MarshalIndent(jsonable(v), "", "  "); err == nil {
					return FormatMsgPack, string(b)
				}
			}
		}
	}
	if utf8.Valid(p) {
		return FormatText, strconv.Quote(string(p)) + cut
	}
	return FormatBinary, hex.Dump(p) + cut
}

// isMsgPackContainer tells the first bytes of a MessagePack map or array.
func isMsgPackContainer(c byte) bool {
	return (c >= 0x80 && c <= 0x9f) || c == 0xdc || c == 0xdd || c == 0xde || c == 0xdf
}

// jsonable turns what MsgPack decodes into an interface (maps with keys of
// any type) into values encoding/json takes. Nesting is bounded by the
// decoder (broker.MaxDepth).
func jsonable(v any) any {
	switch x := v.(type) {
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[fmt.Sprint(k)] = jsonable(e)
		}
		return m
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = jsonable(e)
		}
		return m
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = jsonable(e)
		}
		return out
	default:
		return v
	}
}

// entryJSON is the JSON form of an Entry: the payload as JSON in
// "payload" when it is compact JSON, else its bytes in base64 in "raw"
// (the form of the command's tail --json).
type entryJSON struct {
	plainEntry
	Payload json.RawMessage `json:"payload,omitempty"`
	Raw     []byte          `json:"raw,omitempty"`
}

type plainEntry Entry

// MarshalJSON writes the entry with its payload as JSON in "payload" when
// it is compact JSON (as serializers write it), else as base64 in "raw":
// UnmarshalJSON gets the payload back byte for byte, whatever the
// indentation of the document.
func (e Entry) MarshalJSON() ([]byte, error) {
	out := entryJSON{plainEntry: plainEntry(e)}
	out.plainEntry.Payload = nil
	if isCompactJSON(e.Payload) {
		out.Payload = e.Payload
	} else {
		out.Raw = e.Payload
	}
	return json.Marshal(out)
}

// UnmarshalJSON reads what MarshalJSON writes (a JSON payload compacted
// back).
func (e *Entry) UnmarshalJSON(b []byte) error {
	var in entryJSON
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	*e = Entry(in.plainEntry)
	e.Payload = in.Raw
	if len(in.Payload) > 0 {
		var c bytes.Buffer
		if err := json.Compact(&c, in.Payload); err != nil {
			return err
		}
		e.Payload = c.Bytes()
	}
	return nil
}

// isCompactJSON tells a payload that is JSON with no insignificant space.
func isCompactJSON(p []byte) bool {
	if len(p) == 0 || !json.Valid(p) {
		return false
	}
	var c bytes.Buffer
	return json.Compact(&c, p) == nil && bytes.Equal(c.Bytes(), p)
}
