<?php

declare(strict_types=1);

namespace AsyncEngine\SilverStripe;

use AsyncEngine\IncompatibleExtension;
use SilverStripe\Control\HTTPRequest;
use SilverStripe\Control\Middleware\HTTPMiddleware;
use SilverStripe\Core\Injector\Injector;

/**
 * First in the Director's middleware chain: hands a self-request of the
 * engine (a POST to _async/run carrying a signature header) straight to
 * AsyncController, past the middlewares that would turn it away before it
 * is verified — AllowedHosts (the request's Host is the server's own name),
 * BasicAuth (it carries no credentials) and CanonicalURL (a redirect is a
 * failed delivery). AsyncController verifies the signature and answers 403
 * when it is not genuine; every other request goes down the usual chain.
 */
class EngineRequestMiddleware implements HTTPMiddleware
{
    /** The header every engine request carries. */
    public const SIGNATURE_HEADER = 'X-Async-Engine-Signature';

    public function process(HTTPRequest $request, callable $delegate)
    {
        if (!$this->isEngineRequest($request)) {
            // The engine's settings for this request: at its end, a worker that
            // does not watch the site's queue yet starts to (schedules and
            // delayed tasks then start on time with no traffic and no cron).
            try {
                Async::configureEngine();
            } catch (IncompatibleExtension $e) {
                // Without the extension pages still work; Async::defer() says why it cannot.
            }
            return $delegate($request);
        }
        /** @var AsyncController $controller */
        $controller = Injector::inst()->create(AsyncController::class);
        return $controller->handleRequest($request);
    }

    /** A POST routed to AsyncController's run action that carries a signature. */
    protected function isEngineRequest(HTTPRequest $request): bool
    {
        return $request->isPOST()
            && $request->getHeader(self::SIGNATURE_HEADER) !== null
            && ($request->routeParams()['Controller'] ?? null) === AsyncController::class
            && $request->param('Action') === 'run';
    }
}
