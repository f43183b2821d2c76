from . import cygrpc as cygrpc
