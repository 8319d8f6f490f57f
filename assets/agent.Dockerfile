# The agent image: the static agenfleet-agent shim alone, FROM scratch (no registry needed).
FROM scratch
COPY agenfleet-agent /agenfleet-agent
USER 65534:65534
ENTRYPOINT ["/agenfleet-agent"]
