package broker

// DecodeAnyHeaders is the general path of DecodeHeaders, which its fast
// path must agree with.
func DecodeAnyHeaders(ser Serializer, b []byte) (map[string]string, error) {
	return decodeAnyHeaders(HeadersSerializer(ser), b)
}
