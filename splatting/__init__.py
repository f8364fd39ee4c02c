"""3D Gaussian splatting: Gaussian model, differentiable rasterizer (CPU kernel + gsplat CUDA), training."""
