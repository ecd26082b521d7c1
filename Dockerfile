# The controller image the manifests in deploy/base expect: a static binary on
# distroless, run as the nonroot user (65532) with a read-only root filesystem.
#   docker build -t ghcr.io/rebalancer-dev/rebalancer:$(git describe --tags --always) .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" -o /out/rebalancer ./cmd/rebalancer

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/rebalancer /rebalancer
USER 65532:65532
ENTRYPOINT ["/rebalancer"]
