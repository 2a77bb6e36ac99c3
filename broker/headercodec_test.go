package broker_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/microchannels/channels/broker"
)

var sampleHeaders = map[string]string{
	"$requestID": "node-1-7", "$level": "1", "$meta": "eyJhIjoxfQ==", "k": "v", "empty": "",
	"x-error-stack": strings.Repeat("c3RhY2s=", 100),
}

// TestHeadersRawSerializer: with the Raw payload serializer, headers are
// still sent and read (as JSON).
func TestHeadersRawSerializer(t *testing.T) {
	b, err := broker.EncodeHeaders(broker.Raw{}, sampleHeaders)
	if err != nil {
		t.Fatalf("encode with Raw: %v", err)
	}
	h, err := broker.DecodeHeaders(broker.Raw{}, b)
	if err != nil || !reflect.DeepEqual(h, sampleHeaders) {
		t.Fatalf("round trip with Raw: %v, %v", err, h)
	}
}

func TestHeadersRoundTrip(t *testing.T) {
	for _, s := range []broker.Serializer{broker.JSON{}, &broker.JSON{}, broker.MsgPack{}, &broker.MsgPack{}, broker.Raw{}, nil} {
		b, err := broker.EncodeHeaders(s, sampleHeaders)
		if err != nil {
			t.Fatalf("%T: %v", s, err)
		}
		h, err := broker.DecodeHeaders(s, b)
		if err != nil || !reflect.DeepEqual(h, sampleHeaders) {
			t.Errorf("%T: %v, %v", s, err, h)
		}
	}
}

// TestHeadersWireFormat: JSON and MsgPack headers are the broker serializer's
// encoding of the headers object, as @moleculer/channels writes them.
func TestHeadersWireFormat(t *testing.T) {
	b, _ := broker.EncodeHeaders(broker.JSON{}, sampleHeaders)
	want, _ := json.Marshal(sampleHeaders)
	if string(b) != string(want) {
		t.Errorf("JSON headers: %s, want %s", b, want)
	}
	b, _ = broker.EncodeHeaders(broker.MsgPack{}, map[string]string{"k": "v"})
	if fmt.Sprintf("% x", b) != "81 a1 6b a1 76" {
		t.Errorf("MsgPack headers: % x", b)
	}
	if s := broker.HeadersSerializer(broker.Raw{}); s.Name() != "JSON" {
		t.Errorf("Raw: headers in %s", s.Name())
	}
}

// TestDecodeHeadersValues: values that are not strings are converted as the
// Redis adapter always did: nil skipped, the rest formatted.
func TestDecodeHeadersValues(t *testing.T) {
	h, err := broker.DecodeHeaders(broker.JSON{}, []byte(`{"a":"x","n":3,"f":1.5,"big":1e21,"t":true,"z":null,"o":{"k":[1,"s"]},"l":[]}`))
	want := map[string]string{"a": "x", "n": "3", "f": "1.5", "big": "1e+21", "t": "true", "o": "map[k:[1 s]]", "l": "[]"}
	if err != nil || !reflect.DeepEqual(h, want) {
		t.Errorf("JSON: %v\n got %v\nwant %v", err, h, want)
	}
	// {"a":"x","n":-3,"u":200,"f":1.5,"t":false,"z":nil,"b":bin "raw","o":{"k":[1]}}
	h, err = broker.DecodeHeaders(broker.MsgPack{}, unhex(t,
		"88 a161 a178 a16e fd a175 ccc8 a166 cb3ff8000000000000 a174 c2 a17a c0 a162 c403726177 a16f 81a16b9101"))
	want = map[string]string{"a": "x", "n": "-3", "u": "200", "f": "1.5", "t": "false", "b": "raw", "o": "map[k:[1]]"}
	if err != nil || !reflect.DeepEqual(h, want) {
		t.Errorf("MsgPack: %v\n got %v\nwant %v", err, h, want)
	}
	for _, s := range []broker.Serializer{broker.JSON{}, broker.MsgPack{}} {
		null := []byte("null")
		if s.Name() == "MsgPack" {
			null = []byte{0xc0}
		}
		if h, err := broker.DecodeHeaders(s, null); err != nil || h != nil {
			t.Errorf("%s nil headers: %v, %v", s.Name(), h, err)
		}
	}
}

func TestDecodeHeadersRefuses(t *testing.T) {
	many := make(map[string]int, broker.MaxHeaders+1)
	for i := range broker.MaxHeaders + 1 {
		many[fmt.Sprint(i)] = i
	}
	manyJSON, _ := json.Marshal(many)
	manyMP, _ := broker.MsgPack{}.Marshal(many)
	huge, _ := json.Marshal(map[string]string{"k": strings.Repeat("x", broker.MaxHeadersSize)})
	cases := []struct {
		name      string
		ser       broker.Serializer
		in        []byte
		malformed bool
	}{
		{"empty", broker.JSON{}, nil, true},
		{"array", broker.JSON{}, []byte(`["a"]`), false},
		{"string", broker.MsgPack{}, []byte{0xa1, 'a'}, false},
		{"int key", broker.MsgPack{}, unhex(t, "81 01 a1 61"), false},
		{"map32 bomb", broker.MsgPack{}, unhex(t, "df ffffffff"), true},
		{"value bomb", broker.MsgPack{}, unhex(t, "81 a1 6b c6 ffffffff"), true},
		{"deep value", broker.MsgPack{}, append(unhex(t, "81 a1 6b"+strings.Repeat("91", 200)), 0xc0), true},
		{"deep JSON value", broker.JSON{}, []byte(`{"k":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}`), true},
		{"too many (JSON)", broker.JSON{}, manyJSON, true},
		{"too many (MsgPack)", broker.MsgPack{}, manyMP, true},
		{"too large", broker.JSON{}, huge, true},
		{"not JSON", broker.Raw{}, []byte("\x81\xa1k\xa1v"), false},
	}
	for _, c := range cases {
		h, err := broker.DecodeHeaders(c.ser, c.in)
		if err == nil {
			t.Errorf("%s: decoded into %v", c.name, h)
			continue
		}
		if errors.Is(err, broker.ErrMalformed) != c.malformed {
			t.Errorf("%s: %v (malformed: %v, want %v)", c.name, err, !c.malformed, c.malformed)
		}
	}
}

func TestEncodeHeadersLimits(t *testing.T) {
	many := make(map[string]string, broker.MaxHeaders+1)
	for i := range broker.MaxHeaders + 1 {
		many[fmt.Sprint(i)] = "v"
	}
	if _, err := broker.EncodeHeaders(broker.JSON{}, many); err == nil {
		t.Error("more than MaxHeaders headers encoded")
	}
	huge := map[string]string{"k": strings.Repeat("x", broker.MaxHeadersSize)}
	if _, err := broker.EncodeHeaders(broker.MsgPack{}, huge); err == nil {
		t.Error("headers over MaxHeadersSize encoded")
	}
	b, err := broker.EncodeHeaders(broker.JSON{}, nil)
	if err != nil || string(b) != "{}" {
		t.Errorf("nil headers: %q, %v", b, err)
	}
}

// TestErrorFromHeadersInvalidData: data that is not JSON is left out, so a
// RemoteError always marshals.
func TestErrorFromHeadersInvalidData(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	e := broker.ErrorFromHeaders(map[string]string{broker.HeaderErrorMessage: "m", broker.HeaderErrorData: b64("not json")})
	if e == nil || e.Data != nil {
		t.Fatalf("%+v", e)
	}
	if _, err := json.Marshal(e); err != nil {
		t.Fatal(err)
	}
	e = broker.ErrorFromHeaders(map[string]string{broker.HeaderErrorMessage: "m", broker.HeaderErrorData: b64(`{"a":[1]}`)})
	if string(e.Data) != `{"a":[1]}` {
		t.Fatalf("%s", e.Data)
	}
}

// TestErrorFromHeadersTimestampRange: a timestamp time.Time cannot marshal
// as JSON (year 24151 here, found by FuzzErrorFromHeaders) is left out.
func TestErrorFromHeadersTimestampRange(t *testing.T) {
	for ts, keep := range map[string]bool{"700000000000000": false, "-62135596800000": false,
		"1700000000123": true, "0": true, "253402214400000": true, "-9223372036854775808": false} {
		e := broker.ErrorFromHeaders(map[string]string{broker.HeaderErrorMessage: "m", broker.HeaderErrorTimestamp: ts})
		if e.Timestamp.IsZero() == keep {
			t.Errorf("%s: timestamp %v", ts, e.Timestamp)
		}
		if _, err := json.Marshal(e); err != nil {
			t.Errorf("%s: %v", ts, err)
		}
	}
}

// TestHeadersPlainJSON: the inputs at the edges of the plain JSON path
// (no reflection) give what encoding/json gives, through either entry
// point; EncodeHeaders writes what json.Marshal writes.
func TestHeadersPlainJSON(t *testing.T) {
	for _, in := range []string{
		`{}`, ` { } `, "{\"a\" :\t\"x\" ,\n\"b\":\"\"}\r\n", `{"a":"x","a":"y"}`, `{"é":"ü"}`,
		`{"a":"\u00e9"}`, `{"a":"x\"y"}`, `{"a":"<&>"}`, "{\"a\":\"\xff\"}", "{\"a\":\"\x01\"}",
		`{"a":"x",}`, `{"a":"x"}x`, `{"a":"x"`, `{"a" "x"}`, `{"a":1}`, `{"a":null}`, `{a:"x"}`, `[]`, `null`, `"s"`,
	} {
		want, wantErr := broker.DecodeAnyHeaders(broker.JSON{}, []byte(in))
		got, err := broker.DecodeHeaders(broker.JSON{}, []byte(in))
		gotS, errS := broker.DecodeHeadersString(broker.JSON{}, in)
		if (err == nil) != (wantErr == nil) || (errS == nil) != (wantErr == nil) ||
			!reflect.DeepEqual(got, want) || !reflect.DeepEqual(gotS, want) {
			t.Errorf("%q: DecodeHeaders %v, %v; DecodeHeadersString %v, %v; encoding/json %v, %v", in, got, err, gotS, errS, want, wantErr)
		}
	}
	for _, h := range []map[string]string{nil, {}, sampleHeaders, {"a": "x\"y"}, {"<": ">&"}, {"a": "<"}, {"b": "&"}, {"c": ">"}, {"é": "\u2028"}, {"a": "\xff"}, {"\x7f": "\x1f"}} {
		got, err := broker.EncodeHeaders(broker.JSON{}, h)
		if h == nil {
			h = map[string]string{}
		}
		want, _ := json.Marshal(h)
		if err != nil || string(got) != string(want) {
			t.Errorf("%q: EncodeHeaders %s, %v; json.Marshal %s", h, got, err, want)
		}
	}
}
