"""Sample applications for the mesh: the hello and world services of the linkerd examples
(``fastmesh.apps.helloworld``), used by the demo, the end-to-end tests and the benchmarks
as the plain-HTTP apps at both ends of a mesh hop."""
