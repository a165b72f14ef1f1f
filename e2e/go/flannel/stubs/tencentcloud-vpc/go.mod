// A stand-in for the Tencent Cloud VPC SDK module, which the Go module proxy does not
// serve: see ../../go.mod. Written for weft; it carries no code of the real SDK.
module github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc

go 1.14
