/* The span records' tags (proxy/span_tags.c) and the exporters' encoders: Zipkin v2 JSON and
 * zipkin.proto3 (proxy/zipkin.c), OTLP (proxy/opentelemetry.c). The golden reports below are
 * exact bytes: a stream's span with every tag (a custom tag replacing a built-in one, values
 * that need escaping, invalid UTF-8), an upstream try's span, and a stream's span with
 * almost nothing. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/buf.h"
#include "proxy/http.h"
#include "proxy/protobuf.h"
#include "proxy/tracer.h"
#include "pt_test.h"

static const char golden_json_1[] =
    "[{\"traceId\":\"0123456789abcdef\",\"id\":\"1111222233334444\",\"name\":\"example.com\","
    "\"kind\":\"SERVER\",\"timestamp\":1700000000123456,\"duration\":1234,\"localEndpoint\":{"
    "\"serviceName\":\"svc \\\"a\\\"\",\"ipv4\":\"127.0.0.1\"},\"shared\":true,\"debug\":true,"
    "\"tags\":{\"component\":\"proxy\",\"node_id\":\"node-1\",\"zone\":\"z1\",\"guid:x-request-"
    "id\":\"a0b1c2d3-0000-4000-8000-00000000abcd\",\"http.url\":\"http://example.com/p\xc3\xa9t"
    "h?q=\\\"1\\\"\\\\\",\"http.method\":\"OVERRIDE\",\"downstream_cluster\":\"-\",\"user_agent"
    "\":\"curl/8 \\u0001\\u001f\\ufffd\\ufffd\\ufffd tab\\u0009 end of a long user agent string"
    "\",\"http.protocol\":\"HTTP/1.1\",\"peer.address\":\"10.1.2.3\",\"request_size\":\"0\",\"r"
    "esponse_size\":\"1024\",\"upstream_cluster\":\"up\",\"upstream_cluster.name\":\"up\",\"htt"
    "p.status_code\":\"503\",\"response_flags\":\"UO,NR\",\"error\":\"true\",\"team\":\"pay"
    "\xf0\x9f\x98\x80ments\"}}]";
static const char golden_proto_1[] =
    "0abd040a080123456789abcdef1a08111122223333444420022a0b6578616d706c652e636f6d314022201824"
    "0a060038d209420f0a077376632022612212047f0000015a120a09636f6d706f6e656e74120570726f78795a"
    "110a076e6f64655f696412066e6f64652d315a0a0a047a6f6e6512027a315a390a11677569643a782d726571"
    "756573742d6964122461306231633264332d303030302d343030302d383030302d3030303030303030616263"
    "645a2b0a08687474702e75726c121f687474703a2f2f6578616d706c652e636f6d2f70c3a974683f713d2231"
    "225c5a170a0b687474702e6d6574686f6412084f564552524944455a170a12646f776e73747265616d5f636c"
    "757374657212012d5a3f0a0a757365725f6167656e7412316375726c2f3820011fffe282207461620920656e"
    "64206f662061206c6f6e672075736572206167656e7420737472696e675a190a0d687474702e70726f746f63"
    "6f6c1208485454502f312e315a180a0c706565722e61646472657373120831302e312e322e335a110a0c7265"
    "71756573745f73697a651201305a150a0d726573706f6e73655f73697a651204313032345a160a1075707374"
    "7265616d5f636c7573746572120275705a1b0a15757073747265616d5f636c75737465722e6e616d65120275"
    "705a170a10687474702e7374617475735f636f646512033530335a170a0e726573706f6e73655f666c616773"
    "1205554f2c4e525a0d0a056572726f721204747275655a140a047465616d120c706179f09f98806d656e7473"
    "60016801";
static const char golden_otel_1[] =
    "0ab1050a420a270a0c736572766963652e6e616d6512170a15756e6b6e6f776e5f736572766963653a656e76"
    "6f790a0a0a026b3112040a0276310a0b0a026b3212050a03763d3212ea040a070a05656e766f7912de040a10"
    "00000000000000000123456789abcdef120811112222333344442a0b6578616d706c652e636f6d30023900ca"
    "853dfe9c971741509e983dfe9c97174a140a09636f6d706f6e656e7412070a0570726f78794a130a076e6f64"
    "655f696412080a066e6f64652d314a0c0a047a6f6e6512040a027a314a3b0a11677569643a782d7265717565"
    "73742d696412260a2461306231633264332d303030302d343030302d383030302d3030303030303030616263"
    "644a2d0a08687474702e75726c12210a1f687474703a2f2f6578616d706c652e636f6d2f70c3a974683f713d"
    "2231225c4a190a0b687474702e6d6574686f64120a0a084f564552524944454a190a12646f776e7374726561"
    "6d5f636c757374657212030a012d4a410a0a757365725f6167656e7412330a316375726c2f3820011fffe282"
    "207461620920656e64206f662061206c6f6e672075736572206167656e7420737472696e674a1b0a0d687474"
    "702e70726f746f636f6c120a0a08485454502f312e314a1a0a0c706565722e61646472657373120a0a083130"
    "2e312e322e334a130a0c726571756573745f73697a6512030a01304a170a0d726573706f6e73655f73697a65"
    "12060a04313032344a180a10757073747265616d5f636c757374657212040a0275704a1d0a15757073747265"
    "616d5f636c75737465722e6e616d6512040a0275704a190a10687474702e7374617475735f636f646512050a"
    "033530334a190a0e726573706f6e73655f666c61677312070a05554f2c4e524a0f0a056572726f7212060a04"
    "747275654a160a047465616d120e0a0c706179f09f98806d656e74737a021802";
static const char golden_json_2[] =
    "[{\"traceId\":\"0123456789abcdef\",\"id\":\"1111222233334444\",\"name\":\"example.com\","
    "\"kind\":\"SERVER\",\"timestamp\":1700000000123456,\"duration\":1234,\"localEndpoint\":{"
    "\"serviceName\":\"svc \\\"a\\\"\",\"ipv4\":\"127.0.0.1\"},\"shared\":true,\"debug\":true,"
    "\"tags\":{\"component\":\"proxy\",\"node_id\":\"node-1\",\"zone\":\"z1\",\"guid:x-request-"
    "id\":\"a0b1c2d3-0000-4000-8000-00000000abcd\",\"http.url\":\"http://example.com/p\xc3\xa9t"
    "h?q=\\\"1\\\"\\\\\",\"http.method\":\"OVERRIDE\",\"downstream_cluster\":\"-\",\"user_agent"
    "\":\"curl/8 \\u0001\\u001f\\ufffd\\ufffd\\ufffd tab\\u0009 end of a long user agent string"
    "\",\"http.protocol\":\"HTTP/1.1\",\"peer.address\":\"10.1.2.3\",\"request_size\":\"0\",\"r"
    "esponse_size\":\"1024\",\"upstream_cluster\":\"up\",\"upstream_cluster.name\":\"up\",\"htt"
    "p.status_code\":\"503\",\"response_flags\":\"UO,NR\",\"error\":\"true\",\"team\":\"pay"
    "\xf0\x9f\x98\x80ments\"}},{\"traceId\":\"fedcba98765432100f0e0d0c0b0a0908\",\"id\":\"abcde"
    "f0012345678\",\"parentId\":\"1111222233334444\",\"name\":\"router up egress\",\"kind\":\"C"
    "LIENT\",\"timestamp\":1700000000124000,\"duration\":1,\"localEndpoint\":{\"serviceName\":"
    "\"svc \\\"a\\\"\"},\"tags\":{\"component\":\"proxy\",\"upstream_cluster\":\"up\",\"upstrea"
    "m_cluster.name\":\"up\",\"upstream_address\":\"[::1]:8080\",\"peer.address\":\"[::1]:8080"
    "\",\"http.protocol\":\"HTTP/2\",\"http.status_code\":\"0\",\"retry.count\":\"1\",\"error"
    "\":\"true\"}}]";
static const char golden_proto_2[] =
    "0abd040a080123456789abcdef1a08111122223333444420022a0b6578616d706c652e636f6d314022201824"
    "0a060038d209420f0a077376632022612212047f0000015a120a09636f6d706f6e656e74120570726f78795a"
    "110a076e6f64655f696412066e6f64652d315a0a0a047a6f6e6512027a315a390a11677569643a782d726571"
    "756573742d6964122461306231633264332d303030302d343030302d383030302d3030303030303030616263"
    "645a2b0a08687474702e75726c121f687474703a2f2f6578616d706c652e636f6d2f70c3a974683f713d2231"
    "225c5a170a0b687474702e6d6574686f6412084f564552524944455a170a12646f776e73747265616d5f636c"
    "757374657212012d5a3f0a0a757365725f6167656e7412316375726c2f3820011fffe282207461620920656e"
    "64206f662061206c6f6e672075736572206167656e7420737472696e675a190a0d687474702e70726f746f63"
    "6f6c1208485454502f312e315a180a0c706565722e61646472657373120831302e312e322e335a110a0c7265"
    "71756573745f73697a651201305a150a0d726573706f6e73655f73697a651204313032345a160a1075707374"
    "7265616d5f636c7573746572120275705a1b0a15757073747265616d5f636c75737465722e6e616d65120275"
    "705a170a10687474702e7374617475735f636f646512033530335a170a0e726573706f6e73655f666c616773"
    "1205554f2c4e525a0d0a056572726f721204747275655a140a047465616d120c706179f09f98806d656e7473"
    "600168010aa6020a10fedcba98765432100f0e0d0c0b0a0908120811112222333344441a08abcdef00123456"
    "7820012a10726f75746572207570206567726573733160242018240a0600380142090a07737663202261225a"
    "120a09636f6d706f6e656e74120570726f78795a160a10757073747265616d5f636c7573746572120275705a"
    "1b0a15757073747265616d5f636c75737465722e6e616d65120275705a1e0a10757073747265616d5f616464"
    "72657373120a5b3a3a315d3a383038305a1a0a0c706565722e61646472657373120a5b3a3a315d3a38303830"
    "5a170a0d687474702e70726f746f636f6c1206485454502f325a150a10687474702e7374617475735f636f64"
    "651201305a100a0b72657472792e636f756e741201315a0d0a056572726f72120474727565";
static const char golden_otel_2[] =
    "0aec070a420a270a0c736572766963652e6e616d6512170a15756e6b6e6f776e5f736572766963653a656e76"
    "6f790a0a0a026b3112040a0276310a0b0a026b3212050a03763d3212a5070a070a05656e766f7912de040a10"
    "00000000000000000123456789abcdef120811112222333344442a0b6578616d706c652e636f6d30023900ca"
    "853dfe9c971741509e983dfe9c97174a140a09636f6d706f6e656e7412070a0570726f78794a130a076e6f64"
    "655f696412080a066e6f64652d314a0c0a047a6f6e6512040a027a314a3b0a11677569643a782d7265717565"
    "73742d696412260a2461306231633264332d303030302d343030302d383030302d3030303030303030616263"
    "644a2d0a08687474702e75726c12210a1f687474703a2f2f6578616d706c652e636f6d2f70c3a974683f713d"
    "2231225c4a190a0b687474702e6d6574686f64120a0a084f564552524944454a190a12646f776e7374726561"
    "6d5f636c757374657212030a012d4a410a0a757365725f6167656e7412330a316375726c2f3820011fffe282"
    "207461620920656e64206f662061206c6f6e672075736572206167656e7420737472696e674a1b0a0d687474"
    "702e70726f746f636f6c120a0a08485454502f312e314a1a0a0c706565722e61646472657373120a0a083130"
    "2e312e322e334a130a0c726571756573745f73697a6512030a01304a170a0d726573706f6e73655f73697a65"
    "12060a04313032344a180a10757073747265616d5f636c757374657212040a0275704a1d0a15757073747265"
    "616d5f636c75737465722e6e616d6512040a0275704a190a10687474702e7374617475735f636f646512050a"
    "033530334a190a0e726573706f6e73655f666c61677312070a05554f2c4e524a0f0a056572726f7212060a04"
    "747275654a160a047465616d120e0a0c706179f09f98806d656e74737a02180212b8020a10fedcba98765432"
    "100f0e0d0c0b0a09081208abcdef0012345678220811112222333344442a10726f7574657220757020656772"
    "65737330033900178e3dfe9c971741e81a8e3dfe9c97174a140a09636f6d706f6e656e7412070a0570726f78"
    "794a180a10757073747265616d5f636c757374657212040a0275704a1d0a15757073747265616d5f636c7573"
    "7465722e6e616d6512040a0275704a200a10757073747265616d5f61646472657373120c0a0a5b3a3a315d3a"
    "383038304a1c0a0c706565722e61646472657373120c0a0a5b3a3a315d3a383038304a190a0d687474702e70"
    "726f746f636f6c12080a06485454502f324a170a10687474702e7374617475735f636f646512030a01304a12"
    "0a0b72657472792e636f756e7412030a01314a0f0a056572726f7212060a04747275657a021802";
static const char golden_json_3[] =
    "[{\"traceId\":\"0123456789abcdef\",\"id\":\"1111222233334444\",\"name\":\"example.com\","
    "\"kind\":\"SERVER\",\"timestamp\":1700000000123456,\"duration\":1234,\"localEndpoint\":{"
    "\"serviceName\":\"svc \\\"a\\\"\",\"ipv4\":\"127.0.0.1\"},\"shared\":true,\"debug\":true,"
    "\"tags\":{\"component\":\"proxy\",\"node_id\":\"node-1\",\"zone\":\"z1\",\"guid:x-request-"
    "id\":\"a0b1c2d3-0000-4000-8000-00000000abcd\",\"http.url\":\"http://example.com/p\xc3\xa9t"
    "h?q=\\\"1\\\"\\\\\",\"http.method\":\"OVERRIDE\",\"downstream_cluster\":\"-\",\"user_agent"
    "\":\"curl/8 \\u0001\\u001f\\ufffd\\ufffd\\ufffd tab\\u0009 end of a long user agent string"
    "\",\"http.protocol\":\"HTTP/1.1\",\"peer.address\":\"10.1.2.3\",\"request_size\":\"0\",\"r"
    "esponse_size\":\"1024\",\"upstream_cluster\":\"up\",\"upstream_cluster.name\":\"up\",\"htt"
    "p.status_code\":\"503\",\"response_flags\":\"UO,NR\",\"error\":\"true\",\"team\":\"pay"
    "\xf0\x9f\x98\x80ments\"}},{\"traceId\":\"fedcba98765432100f0e0d0c0b0a0908\",\"id\":\"abcde"
    "f0012345678\",\"parentId\":\"1111222233334444\",\"name\":\"router up egress\",\"kind\":\"C"
    "LIENT\",\"timestamp\":1700000000124000,\"duration\":1,\"localEndpoint\":{\"serviceName\":"
    "\"svc \\\"a\\\"\"},\"tags\":{\"component\":\"proxy\",\"upstream_cluster\":\"up\",\"upstrea"
    "m_cluster.name\":\"up\",\"upstream_address\":\"[::1]:8080\",\"peer.address\":\"[::1]:8080"
    "\",\"http.protocol\":\"HTTP/2\",\"http.status_code\":\"0\",\"retry.count\":\"1\",\"error"
    "\":\"true\"}},{\"traceId\":\"0000000000000005\",\"id\":\"0000000000000006\",\"parentId\":"
    "\"0000000000000007\",\"name\":\"\",\"kind\":\"SERVER\",\"timestamp\":8,\"duration\":9,\"lo"
    "calEndpoint\":{\"serviceName\":\"svc \\\"a\\\"\",\"ipv6\":\"::1\"},\"tags\":{\"component"
    "\":\"proxy\",\"http.url\":\"http://\",\"downstream_cluster\":\"-\",\"user_agent\":\"-\","
    "\"peer.address\":\"::1\",\"request_size\":\"0\",\"response_size\":\"0\",\"http.status_code"
    "\":\"200\",\"response_flags\":\"-\"}}]";
static const char golden_proto_3[] =
    "0abd040a080123456789abcdef1a08111122223333444420022a0b6578616d706c652e636f6d314022201824"
    "0a060038d209420f0a077376632022612212047f0000015a120a09636f6d706f6e656e74120570726f78795a"
    "110a076e6f64655f696412066e6f64652d315a0a0a047a6f6e6512027a315a390a11677569643a782d726571"
    "756573742d6964122461306231633264332d303030302d343030302d383030302d3030303030303030616263"
    "645a2b0a08687474702e75726c121f687474703a2f2f6578616d706c652e636f6d2f70c3a974683f713d2231"
    "225c5a170a0b687474702e6d6574686f6412084f564552524944455a170a12646f776e73747265616d5f636c"
    "757374657212012d5a3f0a0a757365725f6167656e7412316375726c2f3820011fffe282207461620920656e"
    "64206f662061206c6f6e672075736572206167656e7420737472696e675a190a0d687474702e70726f746f63"
    "6f6c1208485454502f312e315a180a0c706565722e61646472657373120831302e312e322e335a110a0c7265"
    "71756573745f73697a651201305a150a0d726573706f6e73655f73697a651204313032345a160a1075707374"
    "7265616d5f636c7573746572120275705a1b0a15757073747265616d5f636c75737465722e6e616d65120275"
    "705a170a10687474702e7374617475735f636f646512033530335a170a0e726573706f6e73655f666c616773"
    "1205554f2c4e525a0d0a056572726f721204747275655a140a047465616d120c706179f09f98806d656e7473"
    "600168010aa6020a10fedcba98765432100f0e0d0c0b0a0908120811112222333344441a08abcdef00123456"
    "7820012a10726f75746572207570206567726573733160242018240a0600380142090a07737663202261225a"
    "120a09636f6d706f6e656e74120570726f78795a160a10757073747265616d5f636c7573746572120275705a"
    "1b0a15757073747265616d5f636c75737465722e6e616d65120275705a1e0a10757073747265616d5f616464"
    "72657373120a5b3a3a315d3a383038305a1a0a0c706565722e61646472657373120a5b3a3a315d3a38303830"
    "5a170a0d687474702e70726f746f636f6c1206485454502f325a150a10687474702e7374617475735f636f64"
    "651201305a100a0b72657472792e636f756e741201315a0d0a056572726f721204747275650a87020a080000"
    "000000000005120800000000000000071a08000000000000000620022a003108000000000000003809421b0a"
    "07737663202261221a10000000000000000000000000000000015a120a09636f6d706f6e656e74120570726f"
    "78795a130a08687474702e75726c1207687474703a2f2f5a170a12646f776e73747265616d5f636c75737465"
    "7212012d5a0f0a0a757365725f6167656e7412012d5a130a0c706565722e6164647265737312033a3a315a11"
    "0a0c726571756573745f73697a651201305a120a0d726573706f6e73655f73697a651201305a170a10687474"
    "702e7374617475735f636f646512033230305a130a0e726573706f6e73655f666c61677312012d";
static const char golden_otel_3[] =
    "0afa090a420a270a0c736572766963652e6e616d6512170a15756e6b6e6f776e5f736572766963653a656e76"
    "6f790a0a0a026b3112040a0276310a0b0a026b3212050a03763d3212b3090a070a05656e766f7912de040a10"
    "00000000000000000123456789abcdef120811112222333344442a0b6578616d706c652e636f6d30023900ca"
    "853dfe9c971741509e983dfe9c97174a140a09636f6d706f6e656e7412070a0570726f78794a130a076e6f64"
    "655f696412080a066e6f64652d314a0c0a047a6f6e6512040a027a314a3b0a11677569643a782d7265717565"
    "73742d696412260a2461306231633264332d303030302d343030302d383030302d3030303030303030616263"
    "644a2d0a08687474702e75726c12210a1f687474703a2f2f6578616d706c652e636f6d2f70c3a974683f713d"
    "2231225c4a190a0b687474702e6d6574686f64120a0a084f564552524944454a190a12646f776e7374726561"
    "6d5f636c757374657212030a012d4a410a0a757365725f6167656e7412330a316375726c2f3820011fffe282"
    "207461620920656e64206f662061206c6f6e672075736572206167656e7420737472696e674a1b0a0d687474"
    "702e70726f746f636f6c120a0a08485454502f312e314a1a0a0c706565722e61646472657373120a0a083130"
    "2e312e322e334a130a0c726571756573745f73697a6512030a01304a170a0d726573706f6e73655f73697a65"
    "12060a04313032344a180a10757073747265616d5f636c757374657212040a0275704a1d0a15757073747265"
    "616d5f636c75737465722e6e616d6512040a0275704a190a10687474702e7374617475735f636f646512050a"
    "033530334a190a0e726573706f6e73655f666c61677312070a05554f2c4e524a0f0a056572726f7212060a04"
    "747275654a160a047465616d120e0a0c706179f09f98806d656e74737a02180212b8020a10fedcba98765432"
    "100f0e0d0c0b0a09081208abcdef0012345678220811112222333344442a10726f7574657220757020656772"
    "65737330033900178e3dfe9c971741e81a8e3dfe9c97174a140a09636f6d706f6e656e7412070a0570726f78"
    "794a180a10757073747265616d5f636c757374657212040a0275704a1d0a15757073747265616d5f636c7573"
    "7465722e6e616d6512040a0275704a200a10757073747265616d5f61646472657373120c0a0a5b3a3a315d3a"
    "383038304a1c0a0c706565722e61646472657373120c0a0a5b3a3a315d3a383038304a190a0d687474702e70"
    "726f746f636f6c12080a06485454502f324a170a10687474702e7374617475735f636f646512030a01304a12"
    "0a0b72657472792e636f756e7412030a01314a0f0a056572726f7212060a04747275657a021802128b020a10"
    "0000000000000000000000000000000512080000000000000006220800000000000000072a00300239401f00"
    "00000000004168420000000000004a140a09636f6d706f6e656e7412070a0570726f78794a150a0868747470"
    "2e75726c12090a07687474703a2f2f4a190a12646f776e73747265616d5f636c757374657212030a012d4a11"
    "0a0a757365725f6167656e7412030a012d4a150a0c706565722e6164647265737312050a033a3a314a130a0c"
    "726571756573745f73697a6512030a01304a140a0d726573706f6e73655f73697a6512030a01304a190a1068"
    "7474702e7374617475735f636f646512050a033230304a150a0e726573706f6e73655f666c61677312030a01"
    "2d";

/* A record as a worker makes it: the fields of `f`, then copies of the strings (str: by
 * enum pt_span_str_index, NULL for absent; custom: key, value pairs). */
static pt_span_rec_t *rec_make(const pt_span_rec_t *f, const char *const *str,
                               const char *const *custom, unsigned ncustom)
{
    size_t size = sizeof(pt_span_rec_t) + 2 * ncustom * sizeof(pt_span_str_t), strs = 0;
    for (unsigned i = 0; i < PT_SPAN_NSTR; i++)
        strs += str[i] != NULL ? strlen(str[i]) + 1 : 0;
    for (unsigned i = 0; i < 2 * ncustom; i++)
        strs += strlen(custom[i]) + 1;
    pt_span_rec_t *rec = malloc(size + strs);
    if (rec == NULL)
        abort();
    *rec = *f;
    char *p = (char *)rec + size;
    for (unsigned i = 0; i < PT_SPAN_NSTR + 2 * ncustom; i++) {
        const char *s = i < PT_SPAN_NSTR ? str[i] : custom[i - PT_SPAN_NSTR];
        pt_span_str_t *d = i < PT_SPAN_NSTR ? &rec->str[i] : &rec->custom[i - PT_SPAN_NSTR];
        if (s == NULL) {
            *d = (pt_span_str_t){NULL, 0};
            continue;
        }
        size_t n = strlen(s);
        memcpy(p, s, n + 1);
        *d = (pt_span_str_t){p, (uint32_t)n};
        p += n + 1;
    }
    rec->ncustom = ncustom;
    return rec;
}

static pt_addr_t addr(const char *ip)
{
    pt_addr_t a;
    memset(&a, 0, sizeof(a));
    if (pt_addr_parse(&a, ip, 80) != 0)
        abort();
    return a;
}

static void hex(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

/* The three golden spans. */
static void golden_spans(pt_tracer_t *t, pt_span_rec_t *spans[3])
{
    const char *s1[PT_SPAN_NSTR] = {
        [PT_SPAN_S_NAME] = "example.com",
        [PT_SPAN_S_NODE_ID] = "node-1",
        [PT_SPAN_S_ZONE] = "z1",
        [PT_SPAN_S_REQUEST_ID] = "a0b1c2d3-0000-4000-8000-00000000abcd",
        [PT_SPAN_S_URL] = "http://example.com/p\xc3\xa9th?q=\"1\"\\",
        [PT_SPAN_S_METHOD] = "GET",
        [PT_SPAN_S_USER_AGENT] =
            "curl/8 \x01\x1f\xff\xe2\x82 tab\t end of a long user agent string",
        [PT_SPAN_S_CLUSTER] = "up"};
    const char *c1[] = {"http.method", "OVERRIDE", "team", "pay\xf0\x9f\x98\x80ments"};
    pt_span_rec_t f1 = {.tracer = t,
                        .trace_lo = 0x0123456789abcdefull,
                        .id = 0x1111222233334444ull,
                        .start_us = 1700000000123456ull,
                        .duration_us = 1234,
                        .kind = PT_SPAN_SERVER,
                        .shared = 1,
                        .debug = 1,
                        .headers = 1,
                        .status = 503,
                        .response_flags = PT_RF(UPSTREAM_OVERFLOW) | PT_RF(NO_ROUTE_FOUND),
                        .bytes_sent = 1024,
                        .protocol = "HTTP/1.1",
                        .peer = addr("10.1.2.3"),
                        .local = addr("127.0.0.1")};
    spans[0] = rec_make(&f1, s1, c1, 2);
    const char *s2[PT_SPAN_NSTR] = {[PT_SPAN_S_NAME] = "router up egress",
                                    [PT_SPAN_S_CLUSTER] = "up",
                                    [PT_SPAN_S_UPSTREAM_HOST] = "[::1]:8080"};
    pt_span_rec_t f2 = {.tracer = t,
                        .trace_hi = 0xfedcba9876543210ull,
                        .trace_lo = 0x0f0e0d0c0b0a0908ull,
                        .id = 0xabcdef0012345678ull,
                        .parent_id = 0x1111222233334444ull,
                        .start_us = 1700000000124000ull,
                        .duration_us = 1,
                        .kind = PT_SPAN_CLIENT,
                        .upstream_try = 1,
                        .status = 0,
                        .retries = 1,
                        .protocol = "HTTP/2"};
    spans[1] = rec_make(&f2, s2, NULL, 0);
    const char *s3[PT_SPAN_NSTR] = {[PT_SPAN_S_NAME] = "", [PT_SPAN_S_URL] = "http://"};
    pt_span_rec_t f3 = {.tracer = t,
                        .trace_lo = 5,
                        .id = 6,
                        .parent_id = 7,
                        .start_us = 8,
                        .duration_us = 9,
                        .kind = PT_SPAN_SERVER,
                        .headers = 1,
                        .status = 200,
                        .peer = addr("::1"),
                        .local = addr("::1")};
    spans[2] = rec_make(&f3, s3, NULL, 0);
}

/* Reports of one, two and three spans, exactly. */
static void test_golden_reports(void)
{
    pt_tracer_t t = {.service_name = "svc \"a\"", .otel_env_attrs = "k1=v1,service.name=zz,k2=v=2"};
    pt_span_rec_t *spans[3];
    golden_spans(&t, spans);
    const char *json[] = {golden_json_1, golden_json_2, golden_json_3};
    const char *proto[] = {golden_proto_1, golden_proto_2, golden_proto_3};
    const char *otel[] = {golden_otel_1, golden_otel_2, golden_otel_3};
    char buf[8192];
    for (unsigned n = 1; n <= 3; n++) {
        size_t len;
        char *text = pt_zipkin_encode_json(spans, n, &len);
        PT_CHECK(text != NULL && len == strlen(text));
        PT_CHECK_STR(text, json[n - 1]);
        free(text);
        uint8_t *pb = pt_zipkin_encode_proto(spans, n, &len);
        PT_CHECK(pb != NULL && 2 * len < sizeof(buf));
        hex(pb, len, buf);
        free(pb);
        PT_CHECK_STR(buf, proto[n - 1]);
        pb = pt_otel_encode(&t, spans, n, &len);
        PT_CHECK(pb != NULL && 2 * len < sizeof(buf));
        hex(pb, len, buf);
        free(pb);
        PT_CHECK_STR(buf, otel[n - 1]);
    }
    size_t len;
    char *text = pt_zipkin_encode_json(spans, 0, &len);
    PT_CHECK(text != NULL && len == 2);
    PT_CHECK_STR(text, "[]");
    free(text);
    for (unsigned i = 0; i < 3; i++)
        free(spans[i]);
}

/* The tags in Envoy's order; a custom tag replaces a built-in one in place and loses its
 * "plain" mark; the stream's span without request headers has no request tags; a Unix
 * socket's path is escaped. */
static void test_span_tags(void)
{
    pt_tracer_t t = {.service_name = "svc"};
    pt_span_rec_t *spans[3];
    golden_spans(&t, spans);
    pt_span_tags_t tags;
    pt_span_tags(spans[0], &tags);
    static const char *const keys[] = {"component",
                                       "node_id",
                                       "zone",
                                       "guid:x-request-id",
                                       "http.url",
                                       "http.method",
                                       "downstream_cluster",
                                       "user_agent",
                                       "http.protocol",
                                       "peer.address",
                                       "request_size",
                                       "response_size",
                                       "upstream_cluster",
                                       "upstream_cluster.name",
                                       "http.status_code",
                                       "response_flags",
                                       "error",
                                       "team"};
    PT_CHECK_INT(tags.n, sizeof(keys) / sizeof(keys[0]));
    for (unsigned i = 0; i < tags.n; i++) {
        PT_CHECK_MEM(tags.tag[i].key, tags.tag[i].klen, keys[i], strlen(keys[i]));
        PT_CHECK_INT(tags.tag[i].value[tags.tag[i].vlen], 0);
    }
    PT_CHECK_MEM(tags.tag[5].value, tags.tag[5].vlen, "OVERRIDE", 8);
    PT_CHECK_INT(tags.tag[5].plain, PT_TAG_KEY_PLAIN);
    PT_CHECK_INT(tags.tag[0].plain, PT_TAG_KEY_PLAIN | PT_TAG_VALUE_PLAIN);
    PT_CHECK_INT(tags.tag[17].plain, 0);
    PT_CHECK_INT(tags.tag[3].plain, PT_TAG_KEY_PLAIN); /* a header's value */
    PT_CHECK_INT(tags.error, 1);
    PT_CHECK_STR(tags.local_ip, "127.0.0.1");

    pt_span_tags(spans[1], &tags);
    PT_CHECK_INT(tags.n, 9);
    PT_CHECK(tags.local_ip == NULL);
    PT_CHECK_MEM(tags.tag[7].key, tags.tag[7].klen, "retry.count", 11);
    PT_CHECK_MEM(tags.tag[7].value, tags.tag[7].vlen, "1", 1);

    spans[2]->headers = 0;
    spans[2]->status = 404;
    pt_span_tags(spans[2], &tags);
    static const char *const few[] = {"component",     "peer.address",     "request_size",
                                      "response_size", "http.status_code", "response_flags"};
    PT_CHECK_INT(tags.n, 6);
    for (unsigned i = 0; i < tags.n; i++)
        PT_CHECK_MEM(tags.tag[i].key, tags.tag[i].klen, few[i], strlen(few[i]));
    PT_CHECK_INT(tags.error, 0);

    pt_addr_t pipe;
    PT_CHECK_INT(pt_addr_parse_pipe(&pipe, "/tmp/a\"b"), 0);
    spans[2]->peer = pipe;
    pt_span_tags(spans[2], &tags);
    PT_CHECK_MEM(tags.tag[1].value, tags.tag[1].vlen, "/tmp/a\"b", 8);
    PT_CHECK_INT(tags.tag[1].plain, PT_TAG_KEY_PLAIN);
    for (unsigned i = 0; i < 3; i++)
        free(spans[i]);
}

/* A record without custom tags has its JSON tags written straight from the record; one with
 * them goes through pt_span_tags. A custom tag that sets "component" to what it is changes
 * nothing, so both ways must give the same bytes, whatever the record holds. */
static void check_both_ways(const pt_span_rec_t *f, const char *const *str)
{
    static const char *const same[] = {"component", "proxy"};
    pt_span_rec_t *fast = rec_make(f, str, NULL, 0), *listed = rec_make(f, str, same, 1);
    size_t la, lb;
    char *a = pt_zipkin_encode_json(&fast, 1, &la), *b = pt_zipkin_encode_json(&listed, 1, &lb);
    free(fast);
    free(listed);
    PT_CHECK(a != NULL && b != NULL);
    PT_CHECK_STR(a, b);
    PT_CHECK_INT(la, lb);
    json_error_t err;
    json_t *j = json_loads(a, 0, &err);
    PT_CHECK(json_is_array(j));
    json_decref(j);
    free(a);
    free(b);
}

static void test_json_tags_both_ways(void)
{
    pt_tracer_t t = {.service_name = "svc"};
    const char *full[PT_SPAN_NSTR] = {
        [PT_SPAN_S_NAME] = "op \"x\"",
        [PT_SPAN_S_NODE_ID] = "node\t1",
        [PT_SPAN_S_ZONE] = "zone-a",
        [PT_SPAN_S_REQUEST_ID] = "a0b1c2d3-0000-4000-8000-00000000abcd",
        [PT_SPAN_S_URL] = "https://h.example/a/very/long/path/\xc3\xa9?q=1&r=\"2\"",
        [PT_SPAN_S_METHOD] = "POST",
        [PT_SPAN_S_DOWNSTREAM_CLUSTER] = "front\\end",
        [PT_SPAN_S_USER_AGENT] = "agent/1.0 (\x01\xff)",
        [PT_SPAN_S_CLUSTER] = "backend\"v2\""};
    const char *none[PT_SPAN_NSTR] = {[PT_SPAN_S_NAME] = ""};
    pt_addr_t pipe, unset;
    memset(&unset, 0, sizeof(unset));
    PT_CHECK_INT(pt_addr_parse_pipe(&pipe, "@sock\"et"), 0);
    pt_span_rec_t f = {.tracer = &t,
                       .trace_hi = 3,
                       .trace_lo = 4,
                       .id = 5,
                       .parent_id = 6,
                       .start_us = 7,
                       .duration_us = 8,
                       .kind = PT_SPAN_SERVER,
                       .headers = 1,
                       .status = 200,
                       .bytes_received = 12345678901ull,
                       .bytes_sent = 9,
                       .protocol = "HTTP/1.1",
                       .peer = addr("192.168.100.200"),
                       .local = addr("fe80::1")};
    check_both_ways(&f, full);
    check_both_ways(&f, none);
    pt_span_rec_t g = f;
    g.headers = 0;
    g.protocol = NULL;
    g.response_flags = PT_RF(UPSTREAM_OVERFLOW);
    g.status = 0;
    g.peer = pipe;
    g.local = pipe;
    check_both_ways(&g, full);
    check_both_ways(&g, none);
    g.status = 500;
    g.local = unset;
    g.peer = unset;
    check_both_ways(&g, full);
    g.status = 404;
    g.local = addr("::ffff:10.0.0.1");
    check_both_ways(&g, none);
    const char *try_full[PT_SPAN_NSTR] = {[PT_SPAN_S_NAME] = "router backend egress",
                                          [PT_SPAN_S_CLUSTER] = "back\"end",
                                          [PT_SPAN_S_UPSTREAM_HOST] = "10.0.0.1:80"};
    pt_span_rec_t c = {.tracer = &t,
                       .trace_lo = 4,
                       .id = 5,
                       .parent_id = 6,
                       .kind = PT_SPAN_CLIENT,
                       .upstream_try = 1,
                       .status = 503,
                       .retries = 2,
                       .protocol = "HTTP/2"};
    check_both_ways(&c, try_full);
    c.status = 201;
    c.protocol = NULL;
    check_both_ways(&c, none);
}

/* The JSON written into a buffer (the report's body) is the same as the flat one, for
 * spans that fit a chunk and for one too big for half a chunk (written aside). */
static void test_json_into_buffer(void)
{
    pt_tracer_t t = {.service_name = "svc"};
    pt_span_rec_t *spans[4];
    golden_spans(&t, spans);
    static char ua[3000];
    memset(ua, '"', sizeof(ua) - 1); /* 6 bytes each at most: more than half a chunk */
    const char *big[PT_SPAN_NSTR] = {[PT_SPAN_S_NAME] = "big", [PT_SPAN_S_USER_AGENT] = ua};
    spans[3] = rec_make(spans[2], big, NULL, 0);
    for (unsigned n = 0; n <= 4; n++) {
        size_t len;
        char *flat = pt_zipkin_encode_json(spans, n, &len);
        PT_CHECK(flat != NULL);
        pt_buf_t b = {0};
        PT_CHECK_INT(pt_zipkin_encode_json_buf(spans, n, &b), 0);
        PT_CHECK_INT(pt_buf_len(&b), len);
        char *copy = malloc(len + 1);
        PT_CHECK(copy != NULL);
        PT_CHECK_INT(pt_buf_copyout(&b, 0, copy, len), len);
        copy[len] = '\0';
        pt_buf_dispose(&b);
        PT_CHECK_STR(copy, flat);
        free(copy);
        free(flat);
    }
    for (unsigned i = 0; i < 4; i++)
        free(spans[i]);
}

/* The room reserved for a span holds the longest it can be: every string made of control
 * characters (six bytes each as JSON), both addresses Unix socket paths of them, every
 * response flag, the largest numbers. One long string makes the span bigger than half a
 * buffer chunk, so it is written into a block of exactly that room, where an overflow is a
 * sanitizer error. */
static void test_json_worst_case_room(void)
{
    static char ctl[1600], path[PT_ADDR_STRLEN - 8];
    memset(ctl, '\x01', sizeof(ctl) - 1);
    memset(path, '\x02', sizeof(path) - 1);
    path[0] = '/';
    pt_tracer_t t = {.service_name = ctl + sizeof(ctl) - 40};
    pt_addr_t pipe;
    PT_CHECK_INT(pt_addr_parse_pipe(&pipe, path), 0);
    const char *s[PT_SPAN_NSTR];
    for (unsigned i = 0; i < PT_SPAN_NSTR; i++)
        s[i] = ctl + sizeof(ctl) - 60;
    s[PT_SPAN_S_USER_AGENT] = ctl;
    for (int kind = 0; kind < 2; kind++) {
        pt_span_rec_t f = {.tracer = &t,
                           .trace_hi = UINT64_MAX,
                           .trace_lo = UINT64_MAX,
                           .id = UINT64_MAX,
                           .parent_id = UINT64_MAX,
                           .start_us = UINT64_MAX,
                           .duration_us = UINT64_MAX,
                           .kind = PT_SPAN_CLIENT,
                           .shared = 1,
                           .debug = 1,
                           .upstream_try = (uint8_t)kind,
                           .headers = 1,
                           .status = 500,
                           .response_flags = UINT32_MAX,
                           .retries = UINT32_MAX,
                           .bytes_received = UINT64_MAX,
                           .bytes_sent = UINT64_MAX,
                           .protocol = "HTTP/1.1",
                           .peer = pipe,
                           .local = pipe};
        pt_span_rec_t *r = rec_make(&f, s, NULL, 0);
        pt_buf_t b = {0};
        PT_CHECK_INT(pt_zipkin_encode_json_buf(&r, 1, &b), 0);
        size_t len = pt_buf_len(&b);
        char *text = malloc(len + 1);
        PT_CHECK(text != NULL);
        pt_buf_copyout(&b, 0, text, len);
        text[len] = '\0';
        pt_buf_dispose(&b);
        free(r);
        json_error_t err;
        /* jansson's integers stop at INT64_MAX: the largest timestamps are read as reals. */
        json_t *j = json_loads(text, JSON_DECODE_INT_AS_REAL, &err);
        if (j == NULL)
            fprintf(stderr, "%s at %d: %.80s\n", err.text, err.position, text + err.position);
        free(text);
        PT_CHECK(json_is_array(j));
        json_decref(j);
    }
}

/* Timestamps and durations of every length, written as decimal. */
static void test_json_numbers(void)
{
    pt_tracer_t t = {.service_name = "svc"};
    const char *s[PT_SPAN_NSTR] = {[PT_SPAN_S_NAME] = "n"};
    uint64_t p = 1;
    for (int k = 0; k <= 20; k++) {
        uint64_t vals[3] = {p, p - 1, k == 20 ? UINT64_MAX : p + 7};
        for (int j = 0; j < 3; j++) {
            pt_span_rec_t f = {.tracer = &t,
                               .trace_lo = 1,
                               .id = 2,
                               .upstream_try = 1,
                               .start_us = vals[j],
                               .duration_us = vals[j] / 3};
            pt_span_rec_t *r = rec_make(&f, s, NULL, 0);
            size_t len;
            char *text = pt_zipkin_encode_json(&r, 1, &len);
            free(r);
            PT_CHECK(text != NULL);
            char want[96];
            snprintf(want, sizeof(want), "\"timestamp\":%llu,\"duration\":%llu,",
                     (unsigned long long)vals[j], (unsigned long long)(vals[j] / 3));
            int found = strstr(text, want) != NULL;
            free(text);
            PT_CHECK(found);
        }
        if (k < 19)
            p *= 10;
    }
}

/* Two spans through both Zipkin encoders, read back as JSON and as protobuf. */
static void test_zipkin_encoders(void)
{
    pt_tracer_t t = {.service_name = "svc"};
    const char *sa[PT_SPAN_NSTR] = {[PT_SPAN_S_NAME] = "op", [PT_SPAN_S_METHOD] = "GET"};
    pt_span_rec_t fa = {.tracer = &t,
                        .trace_lo = 0x1234,
                        .id = 0x55,
                        .start_us = 1700000000000000ull,
                        .duration_us = 42,
                        .kind = PT_SPAN_SERVER,
                        .shared = 1,
                        .headers = 1,
                        .status = 200,
                        .peer = addr("10.0.0.2"),
                        .local = addr("10.0.0.1")};
    const char *sb[PT_SPAN_NSTR] = {[PT_SPAN_S_NAME] = "c"};
    pt_span_rec_t fb = {.tracer = &t,
                        .trace_hi = 0x1,
                        .trace_lo = 0x2,
                        .id = 0x66,
                        .parent_id = 0x55,
                        .start_us = 5,
                        .duration_us = 1,
                        .kind = PT_SPAN_CLIENT,
                        .upstream_try = 1,
                        .status = 200};
    pt_span_rec_t *spans[2] = {rec_make(&fa, sa, NULL, 0), rec_make(&fb, sb, NULL, 0)};
    pt_span_tags_t tags;
    unsigned want_tags[2];
    pt_span_tags(spans[0], &tags);
    want_tags[0] = tags.n;
    pt_span_tags(spans[1], &tags);
    want_tags[1] = tags.n;
    size_t len;
    char *text = pt_zipkin_encode_json(spans, 2, &len);
    PT_CHECK(text != NULL && len == strlen(text));
    json_error_t err;
    json_t *arr = json_loads(text, 0, &err);
    free(text);
    PT_CHECK(json_is_array(arr) && json_array_size(arr) == 2);
    json_t *s0 = json_array_get(arr, 0), *s1 = json_array_get(arr, 1);
    PT_CHECK_STR(json_string_value(json_object_get(s0, "traceId")), "0000000000001234");
    PT_CHECK_STR(json_string_value(json_object_get(s0, "id")), "0000000000000055");
    PT_CHECK(json_object_get(s0, "parentId") == NULL);
    PT_CHECK_STR(json_string_value(json_object_get(s0, "kind")), "SERVER");
    PT_CHECK(json_is_true(json_object_get(s0, "shared")));
    PT_CHECK(json_integer_value(json_object_get(s0, "timestamp")) == 1700000000000000ll);
    PT_CHECK_STR(json_string_value(json_object_get(json_object_get(s0, "localEndpoint"), "ipv4")),
                 "10.0.0.1");
    PT_CHECK_STR(json_string_value(json_object_get(json_object_get(s0, "tags"), "http.method")),
                 "GET");
    PT_CHECK_INT(json_object_size(json_object_get(s0, "tags")), want_tags[0]);
    PT_CHECK_STR(json_string_value(json_object_get(s1, "traceId")),
                 "00000000000000010000000000000002");
    PT_CHECK_STR(json_string_value(json_object_get(s1, "parentId")), "0000000000000055");
    PT_CHECK_STR(json_string_value(json_object_get(s1, "kind")), "CLIENT");
    PT_CHECK(json_object_get(json_object_get(s1, "localEndpoint"), "ipv4") == NULL);
    json_decref(arr);

    uint8_t *pb = pt_zipkin_encode_proto(spans, 2, &len);
    PT_CHECK(pb != NULL);
    pt_pb_reader_t r;
    pt_pb_reader_init(&r, pb, len);
    int nspans = 0;
    while (!pt_pb_reader_done(&r)) {
        uint32_t field;
        int wt;
        const uint8_t *p;
        size_t n;
        PT_CHECK_INT(pt_pb_read_tag(&r, &field, &wt), 0);
        PT_CHECK(field == 1 && wt == 2);
        PT_CHECK_INT(pt_pb_read_len(&r, &p, &n), 0);
        pt_pb_reader_t sr;
        pt_pb_reader_init(&sr, p, n);
        int saw_trace = 0, saw_kind = 0, ntags = 0;
        while (!pt_pb_reader_done(&sr)) {
            PT_CHECK_INT(pt_pb_read_tag(&sr, &field, &wt), 0);
            const uint8_t *q;
            size_t qn;
            uint64_t v;
            if (field == 1) {
                PT_CHECK_INT(pt_pb_read_len(&sr, &q, &qn), 0);
                PT_CHECK_INT(qn, nspans == 0 ? 8 : 16);
                PT_CHECK_INT(q[qn - 1], nspans == 0 ? 0x34 : 0x02);
                saw_trace = 1;
            } else if (field == 4) {
                PT_CHECK_INT(pt_pb_read_varint(&sr, &v), 0);
                PT_CHECK_INT(v, nspans == 0 ? 2 : 1); /* SERVER, CLIENT */
                saw_kind = 1;
            } else if (field == 6) {
                PT_CHECK_INT(wt, 1);
                PT_CHECK_INT(pt_pb_read_fixed64(&sr, &v), 0);
                PT_CHECK(v == (nspans == 0 ? 1700000000000000ull : 5));
            } else if (field == 11) {
                ntags++;
                PT_CHECK_INT(pt_pb_skip(&sr, wt), 0);
            } else {
                PT_CHECK_INT(pt_pb_skip(&sr, wt), 0);
            }
        }
        PT_CHECK(saw_trace && saw_kind);
        PT_CHECK_INT(ntags, want_tags[nspans]);
        nspans++;
    }
    PT_CHECK_INT(nspans, 2);
    free(pb);
    free(spans[0]);
    free(spans[1]);
}

/* Strings are escaped eight bytes at a time while they are plain: special bytes after the
 * first words, and at the very end, must still be found; a custom tag's key is escaped. */
static void test_zipkin_json_escaping(void)
{
    pt_tracer_t t = {.service_name = "s\"vc"};
    const char *s[PT_SPAN_NSTR] = {[PT_SPAN_S_NAME] = "0123456789abcdef\\"};
    const char *c[] = {
        "k",    "0123456789abcdefgh\nij\"kl\x01", "utf8",  "0123456789abcdef\xc3\xa9\xe2\x82\xac",
        "bad",  "0123456789abcdef\xe9x\xc3",      "q\"1",  "01234567",
        "tail", "0123456789abcdef12\"4",          "tail2", "012345678\\"};
    pt_span_rec_t fs = {.tracer = &t,
                        .trace_lo = 1,
                        .id = 2,
                        .start_us = 1,
                        .duration_us = 1,
                        .upstream_try = 1,
                        .status = 200};
    pt_span_rec_t *a = rec_make(&fs, s, c, 6);
    pt_span_rec_t *spans[1] = {a};
    size_t len;
    char *text = pt_zipkin_encode_json(spans, 1, &len);
    PT_CHECK(text != NULL);
    json_error_t err;
    json_t *arr = json_loads(text, 0, &err);
    free(text);
    free(a);
    PT_CHECK(arr != NULL);
    json_t *s0 = json_array_get(arr, 0), *tags = json_object_get(s0, "tags");
    PT_CHECK_STR(json_string_value(json_object_get(s0, "name")), "0123456789abcdef\\");
    PT_CHECK_STR(
        json_string_value(json_object_get(json_object_get(s0, "localEndpoint"), "serviceName")),
        "s\"vc");
    PT_CHECK_STR(json_string_value(json_object_get(tags, "k")), "0123456789abcdefgh\nij\"kl\x01");
    PT_CHECK_STR(json_string_value(json_object_get(tags, "utf8")),
                 "0123456789abcdef\xc3\xa9\xe2\x82\xac");
    PT_CHECK_STR(json_string_value(json_object_get(tags, "bad")),
                 "0123456789abcdef\xef\xbf\xbdx\xef\xbf\xbd");
    PT_CHECK_STR(json_string_value(json_object_get(tags, "q\"1")), "01234567");
    PT_CHECK_STR(json_string_value(json_object_get(tags, "tail")), "0123456789abcdef12\"4");
    PT_CHECK_STR(json_string_value(json_object_get(tags, "tail2")), "012345678\\");
    json_decref(arr);
}

/* The first length-delimited field `want` of a message (0 when absent). */
static int pb_field(const uint8_t *p, size_t n, uint32_t want, const uint8_t **out, size_t *outlen)
{
    pt_pb_reader_t r;
    pt_pb_reader_init(&r, p, n);
    while (!pt_pb_reader_done(&r)) {
        uint32_t f;
        int wt;
        if (pt_pb_read_tag(&r, &f, &wt) != 0)
            return -1;
        if (f == want && wt == 2)
            return pt_pb_read_len(&r, out, outlen) == 0 ? 1 : -1;
        if (pt_pb_skip(&r, wt) != 0)
            return -1;
    }
    return 0;
}

/* An OTLP ExportTraceServiceRequest: resource attributes, one span's ids, kind, times,
 * attributes and ERROR status. */
static void test_otel_encoder(void)
{
    pt_tracer_t t = {.otel_service_name = "checkout",
                     .otel_env_attrs = "team=mesh,bad,=x,service.name=ignored,k=v"};
    const char *s[PT_SPAN_NSTR] = {[PT_SPAN_S_NAME] = "op"};
    pt_span_rec_t fs = {.tracer = &t,
                        .trace_hi = 0x0102030405060708ull,
                        .trace_lo = 9,
                        .id = 0xaa,
                        .parent_id = 0xbb,
                        .start_us = 1000,
                        .duration_us = 5,
                        .kind = PT_SPAN_SERVER,
                        .upstream_try = 1,
                        .status = 503};
    pt_span_rec_t *a = rec_make(&fs, s, NULL, 0);
    pt_span_rec_t *spans[1] = {a};
    size_t len;
    uint8_t *msg = pt_otel_encode(&t, spans, 1, &len);
    free(a);
    PT_CHECK(msg != NULL);
    const uint8_t *rs, *res, *ss, *span, *q;
    size_t rslen, reslen, sslen, spanlen, qlen;
    PT_CHECK_INT(pb_field(msg, len, 1, &rs, &rslen), 1);
    PT_CHECK_INT(pb_field(rs, rslen, 1, &res, &reslen), 1);
    /* Resource attributes: service.name, then the environment's well-formed pairs, not its
     * service.name (service_name wins). */
    pt_pb_reader_t r;
    pt_pb_reader_init(&r, res, reslen);
    const char *want[][2] = {{"service.name", "checkout"}, {"team", "mesh"}, {"k", "v"}};
    int nattr = 0;
    while (!pt_pb_reader_done(&r)) {
        uint32_t f;
        int wt;
        PT_CHECK_INT(pt_pb_read_tag(&r, &f, &wt), 0);
        PT_CHECK_INT(pt_pb_read_len(&r, &q, &qlen), 0);
        PT_CHECK(nattr < 3);
        const uint8_t *k, *v, *sv;
        size_t klen, vlen, svlen;
        PT_CHECK_INT(pb_field(q, qlen, 1, &k, &klen), 1);
        PT_CHECK_INT(pb_field(q, qlen, 2, &v, &vlen), 1);
        PT_CHECK_INT(pb_field(v, vlen, 1, &sv, &svlen), 1);
        PT_CHECK_MEM(k, klen, want[nattr][0], strlen(want[nattr][0]));
        PT_CHECK_MEM(sv, svlen, want[nattr][1], strlen(want[nattr][1]));
        nattr++;
    }
    PT_CHECK_INT(nattr, 3);
    PT_CHECK_INT(pb_field(rs, rslen, 2, &ss, &sslen), 1);
    PT_CHECK_INT(pb_field(ss, sslen, 2, &span, &spanlen), 1);
    PT_CHECK_INT(pb_field(span, spanlen, 1, &q, &qlen), 1);
    PT_CHECK_INT(qlen, 16);
    PT_CHECK(q[0] == 1 && q[7] == 8 && q[15] == 9);
    PT_CHECK_INT(pb_field(span, spanlen, 2, &q, &qlen), 1);
    PT_CHECK(qlen == 8 && q[7] == 0xaa);
    PT_CHECK_INT(pb_field(span, spanlen, 4, &q, &qlen), 1);
    PT_CHECK(qlen == 8 && q[7] == 0xbb);
    PT_CHECK_INT(pb_field(span, spanlen, 15, &q, &qlen), 1);
    PT_CHECK(qlen == 2 && q[0] == 0x18 && q[1] == 2); /* status.code = ERROR */
    pt_pb_reader_init(&r, span, spanlen);
    uint64_t kind = 0, start = 0, end = 0;
    while (!pt_pb_reader_done(&r)) {
        uint32_t f;
        int wt;
        PT_CHECK_INT(pt_pb_read_tag(&r, &f, &wt), 0);
        if (f == 6)
            PT_CHECK_INT(pt_pb_read_varint(&r, &kind), 0);
        else if (f == 7)
            PT_CHECK_INT(pt_pb_read_fixed64(&r, &start), 0);
        else if (f == 8)
            PT_CHECK_INT(pt_pb_read_fixed64(&r, &end), 0);
        else
            PT_CHECK_INT(pt_pb_skip(&r, wt), 0);
    }
    PT_CHECK_INT(kind, 2);
    PT_CHECK(start == 1000000 && end == 1005000);
    free(msg);
}

int main(void)
{
    PT_RUN(test_golden_reports);
    PT_RUN(test_span_tags);
    PT_RUN(test_json_tags_both_ways);
    PT_RUN(test_json_into_buffer);
    PT_RUN(test_json_numbers);
    PT_RUN(test_json_worst_case_room);
    PT_RUN(test_zipkin_encoders);
    PT_RUN(test_zipkin_json_escaping);
    PT_RUN(test_otel_encoder);
    PT_TEST_EXIT();
}
