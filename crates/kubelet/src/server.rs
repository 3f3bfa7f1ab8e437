//! The kubelet HTTPS API (port 10250): container logs, exec and attach for the API server to proxy.
